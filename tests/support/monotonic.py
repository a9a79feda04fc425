"""A monotonic clock that tests advance by hand (for caches that age entries out)."""

from __future__ import annotations


class FakeMonotonic:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
