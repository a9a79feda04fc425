"""When to try a delivery again: the Standard Webhooks schedule, jittered, inside a window."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# The wait after the 1st, 2nd, ... failed attempt (the first attempt is immediate); the last
# step repeats until the window closes.
STANDARD_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
)

Random = Callable[[], float]  # uniform in [0, 1)

DEFAULT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait for a receiver, when to retry it, and when to give up.

    A failure whose next retry would fall after the window's end is retried exactly at the
    end instead, so a receiver is tried for the whole window; a failure at or after the end
    fails the delivery.  `lease` must exceed `timeout`: it is how long a claimed attempt is
    hidden from other workers.
    """

    timeout: float = 10.0
    window: timedelta = DEFAULT_WINDOW
    schedule: tuple[timedelta, ...] = STANDARD_SCHEDULE
    jitter: float = 0.2
    lease: timedelta = timedelta(minutes=2)
    rng: Random = field(default=secrets.SystemRandom().random, compare=False)

    def __post_init__(self) -> None:
        if not self.schedule or not 0 <= self.jitter < 1:
            raise ValueError("a retry schedule needs steps and a jitter in [0, 1)")
        if self.lease.total_seconds() <= self.timeout:
            raise ValueError("the claim lease must outlast the request timeout")

    def delay(self, failures: int) -> timedelta:
        """The wait after `failures` consecutive failed attempts (failures >= 1)."""
        base = self.schedule[min(max(failures, 1), len(self.schedule)) - 1]
        return base * (1 + self.jitter * (2 * self.rng() - 1))

    def next_attempt(self, failures: int, now: datetime, expires_at: datetime) -> datetime | None:
        """When to try again, or None when the window is over."""
        if now >= expires_at:
            return None
        return min(now + self.delay(failures), expires_at)
