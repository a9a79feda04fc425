"""The console's pages, one module per part of the service; each handler is as thin as a router."""
