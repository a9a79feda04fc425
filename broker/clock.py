"""The clock port: the only place the broker reads the time.

Rules about hours and days (grace, suspension, purge, retention) are tested by moving a
clock, never by sleeping.  `FileClock` lets an acceptance test move the clock of a running
broker (API, worker and beat alike); it is refused in production.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        with self._lock:
            self._at = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._at += delta
            return self._at


class FileClock:
    """Reads "now" from a file holding an RFC 3339 time, shared by every process.

    The file is re-read only when its mtime changes, so the cost per call is one stat().
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime_ns = -1
        self._at = datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            mtime = os.stat(self._path).st_mtime_ns
            if mtime != self._mtime_ns:
                text = self._path.read_text().strip()
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
                if parsed.tzinfo is None:
                    raise ValueError(f"{self._path}: time must carry an offset")
                self._at = parsed.astimezone(UTC)
                self._mtime_ns = mtime
            return self._at


def rfc3339(at: datetime) -> str:
    """Format an instant as RFC 3339 UTC with a Z, as the API promises."""
    text = at.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
