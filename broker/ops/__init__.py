"""Operating a deployment: the one-screen status summary and the metrics read at scrape time."""
