"""misbroker: the broker (API, workers, CLI) composing consent, cache and agents."""

__version__ = "0.1.0"
