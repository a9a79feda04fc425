"""Agent tests: the CLI configures logging globally; undo it after each test."""

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_agent_logging() -> Iterator[None]:
    names = ("agents", "httpx", "httpcore")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = saved[name]
        logger.setLevel(levels[name])
