"""HTTP routers: thin, one service call each."""
