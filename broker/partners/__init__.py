"""Partners: the apps that read school data, and the areas they request."""
