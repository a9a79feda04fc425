"""What keeps logins from taking the process down or guessing faster than the lockout allows.

Three bounds, in the order a login meets them:

- `LoginRateLimiter`: fixed one-minute windows per client IP and per account, counted in
  the state Redis (never the evictable cache), so every API process shares them.
- `HashGate`: at most one argon2 verification per core at once in this process (each costs
  64 MiB and a core for a while); a login that cannot get a slot within a short bounded wait
  is answered 503 with Retry-After instead of queueing without bound.
- `reserve_attempt`: the attempt is written as a failure *before* the password is checked,
  in a transaction that also checks the lockout, serialized per database (SQLite's
  `BEGIN IMMEDIATE`, PostgreSQL's advisory lock on the email).  A burst of concurrent
  guesses therefore gets at most the limit evaluated, and an attempt that crashes after the
  reservation has still been counted.  A success deletes the email's failures, its own
  reservation included.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from typing import TypeVar

import redis
from prometheus_client import Gauge
from sqlalchemy import Connection, Engine, insert, select, text
from sqlmodel import col

from broker.admin.models import AdminLoginFailure
from broker.errors import ServiceUnavailableError, TooManyRequestsError

T = TypeVar("T")

HASHES_IN_FLIGHT = Gauge(
    "misbroker_login_hashes_in_flight", "argon2 password verifications running in this process"
)
HASH_SLOTS = Gauge("misbroker_login_hash_slots", "argon2 verifications allowed at once")
_WINDOW = 60  # seconds per rate-limit window


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class HashGate:
    """A process-wide bound on concurrent password hashes, with a gauge of those in flight."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._in_flight = 0
        HASH_SLOTS.set(slots)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def slot(self, wait_seconds: float) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=max(wait_seconds, 0.0)):
            raise ServiceUnavailableError(
                "too many sign-ins at once: try again in a moment",
                headers={"Retry-After": "1"},
                retry_after=1,
            )
        with self._lock:
            self._in_flight += 1
            HASHES_IN_FLIGHT.set(self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                HASHES_IN_FLIGHT.set(self._in_flight)
            self._semaphore.release()

    def run(self, wait_seconds: float, fn: Callable[[], T]) -> T:
        with self.slot(wait_seconds):
            return fn()


@cache
def hash_gate() -> HashGate:
    """The one gate of this process, sized to its cores."""
    return HashGate(cores())


class LoginRateLimiter:
    """Fixed one-minute windows (by the broker's clock) per client IP and per account."""

    def __init__(self, client: redis.Redis, *, per_ip: int, per_account: int) -> None:
        self.client = client
        self.per_ip = per_ip
        self.per_account = per_account

    def hit(self, ip: str, email: str, now: datetime) -> None:
        """Count one attempt; 429 with Retry-After once either window is spent.

        Counted before anything else, refusals included: a client hammering a spent window
        keeps it spent.  Emails are keyed by digest, so Redis holds no address.
        """
        bucket = int(now.timestamp() // _WINDOW)
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        keys = (f"mb:login:ip:{ip}:{bucket}", f"mb:login:acct:{account}:{bucket}")
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(key)
                pipe.expire(key, 2 * _WINDOW)
            by_ip, _, by_account, _ = pipe.execute()
        if int(by_ip) <= self.per_ip and int(by_account) <= self.per_account:
            return
        wait = max(1, math.ceil((bucket + 1) * _WINDOW - now.timestamp()))
        raise TooManyRequestsError(
            "too many sign-in attempts: try again later",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )


def reserve_attempt(
    engine: Engine, email: str, now: datetime, *, limit: int, window: timedelta
) -> datetime | None:
    """Count an attempt for `email` as a failure unless it is locked; the lock's end if so.

    Committed in its own serialized transaction before the password is checked.
    """
    with _serialized(engine, email) as conn:
        stmt = (
            select(col(AdminLoginFailure.at))
            .where(col(AdminLoginFailure.email) == email)
            .order_by(col(AdminLoginFailure.at).desc())
            .limit(limit)
        )
        recent = list(conn.execute(stmt).scalars())
        if len(recent) >= limit and recent[0] - recent[-1] <= window:
            until = recent[0] + window
            if now < until:
                return until
        conn.execute(insert(AdminLoginFailure).values(email=email, at=now))
    return None


@contextmanager
def _serialized(engine: Engine, email: str) -> Iterator[Connection]:
    """A connection in a transaction that no other reservation for `email` runs beside."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # pysqlite begins lazily, at the first write: too late to serialize the read.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            key = int.from_bytes(hashlib.sha256(email.encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
