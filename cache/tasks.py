"""Bodies of the cache's periodic Celery tasks, as plain functions of their dependencies.

The broker's worker registers them (with `TASK_OPTIONS`) and its beat schedules them
(`BEAT_SCHEDULE`); tests call them directly.  Every job is idempotent and runs under a
`beat_lock` for its schedule slot, so two beats, or a beat and a manual run, never act
twice in one slot.  Each area is handled in its own short transaction, so a failure or a
redelivery (`acks_late`) repeats only unfinished work.  Intended registration:

    @celery_app.task(name=tasks.PURGE_EXPIRED, **tasks.TASK_OPTIONS)
    def purge_expired() -> None:
        tasks.purge_expired(cache_deps())

    beat_schedule |= {name: {"task": name, "schedule": period}
                      for name, period in tasks.BEAT_SCHEDULE.items()}
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cache import purge, refresh
from cache import repository as repo
from cache.blobs import BlobStore
from cache.cold import demote_area
from cache.hot import HotCache
from cache.keys import DataKeyStore, KeyRing
from cache.naming import Namer
from cache.refresh import RefreshRequester
from cache.settings import CacheSettings

PURGE_EXPIRED: Final = "cache.purge_expired"
REFRESH_STALE: Final = "cache.refresh_stale"
DEMOTE_IDLE: Final = "cache.demote_idle"
SHRED_CLOSED_SCHOOLS: Final = "cache.shred_closed_schools"
REWRAP_KEYS: Final = "cache.rewrap_keys"

# Task name -> period in seconds, for the broker's beat schedule.
BEAT_SCHEDULE: Final[dict[str, float]] = {
    PURGE_EXPIRED: 3600.0,
    REFRESH_STALE: 300.0,
    DEMOTE_IDLE: 3600.0,
    SHRED_CLOSED_SCHOOLS: 3600.0,
    REWRAP_KEYS: 86400.0,
}
# Options for `celery_app.task(name=..., **TASK_OPTIONS)`.
TASK_OPTIONS: Final[dict[str, Any]] = {
    "acks_late": True,
    "ignore_result": True,
    "autoretry_for": (Exception,),
    "retry_backoff": 10,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 8,
}
DEMOTE_BATCH: Final = 200

_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass
class CacheDeps:
    """What the cache's tasks need; the broker builds one per worker process."""

    engine: Engine
    redis: redis.Redis
    blobs: BlobStore
    keyring: KeyRing
    key_store: DataKeyStore
    clock: Clock
    settings: CacheSettings
    namer: Namer = field(init=False)

    def __post_init__(self) -> None:
        self.namer = Namer(self.keyring)

    @property
    def hot(self) -> HotCache:
        ttl = self.settings.hot_ttl_seconds
        return HotCache(self.redis, self.keyring, self.namer, ttl_seconds=ttl)


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def lock_key(name: str, slot_seconds: int, now: datetime) -> str:
    return f"mb:lock:{name}:{int(now.timestamp()) // slot_seconds}"


@contextmanager
def beat_lock(
    client: redis.Redis, name: str, *, slot_seconds: int, now: datetime
) -> Iterator[bool]:
    """Yield True to exactly one caller per (job, schedule slot); others get False.

    The lock is kept after a successful run until it expires (one slot length), so a
    second beat firing later in the same slot still finds it; it is released (only by
    its owner: the Lua script compares the token) when the job fails, so a retry can run.
    """
    key = lock_key(name, slot_seconds, now)
    token = secrets.token_hex(16)
    acquired = bool(client.set(key, token, nx=True, px=slot_seconds * 1000))
    try:
        yield acquired
    except BaseException:
        if acquired:
            client.eval(_RELEASE, 1, key, token)
        raise


def _job_lock(deps: CacheDeps, name: str, now: datetime) -> AbstractContextManager[bool]:
    """The job's lock for its current slot; a slot is one period of its beat schedule."""
    return beat_lock(deps.redis, name, slot_seconds=int(BEAT_SCHEDULE[name]), now=now)


def purge_expired(deps: CacheDeps, *, dry_run: bool = False) -> purge.PurgeReport | None:
    """cache.purge_expired: remove every area more than 30 days out of date."""
    now = deps.clock.now()
    with _job_lock(deps, PURGE_EXPIRED, now) as acquired:
        if not acquired:
            return None
        return run_purge(deps, now=now, dry_run=dry_run)


def run_purge(
    deps: CacheDeps,
    *,
    now: datetime,
    dry_run: bool,
    drop_hot: bool = True,
    on_batch: Callable[[int], object] | None = None,
) -> purge.PurgeReport:
    """Purge in batches, one transaction each; the CLI calls this directly.

    `on_batch` hears how many areas each batch removed (the CLI's progress bar).

    `drop_hot=False` when no Redis is running: hot pages are keyed by data version and
    expire with their TTL, so skipping their deletion never serves purged data.
    """
    areas: list[purge.PurgedArea] = []
    rows = 0
    hot = deps.hot if drop_hot else None
    while True:
        with unit_of_work(deps.engine) as session:
            report = purge.purge_expired(
                session, deps.blobs, namer=deps.namer, now=now, dry_run=dry_run, hot=hot
            )
        areas += report.areas
        rows += report.rows
        if on_batch is not None:
            on_batch(len(report.areas))
        if dry_run or not report.areas:
            return purge.PurgeReport(now, dry_run, tuple(areas), rows)


def refresh_stale(
    deps: CacheDeps,
    requester: RefreshRequester,
    consented: Callable[[str], Collection[str]],
) -> dict[str, list[str]] | None:
    """cache.refresh_stale: queue `extract` commands for stale areas still in use."""
    now = deps.clock.now()
    with _job_lock(deps, REFRESH_STALE, now) as acquired:
        if not acquired:
            return None
        with unit_of_work(deps.engine) as session:
            return refresh.refresh_stale(
                session,
                requester,
                consented=consented,
                now=now,
                unused_area_days=deps.settings.unused_area_days,
            )


def demote_idle(deps: CacheDeps) -> list[tuple[str, str]] | None:
    """cache.demote_idle: move areas not read for `demote_after_days` to the cold tier."""
    now = deps.clock.now()
    idle_before = now - timedelta(days=deps.settings.demote_after_days)
    with _job_lock(deps, DEMOTE_IDLE, now) as acquired:
        if not acquired:
            return None
        with unit_of_work(deps.engine) as session:
            idle = repo.idle_warm_areas(session.connection(), idle_before, DEMOTE_BATCH)
        demoted: list[tuple[str, str]] = []
        for state in idle:
            with unit_of_work(deps.engine) as session:
                if demote_area(
                    session,
                    deps.keyring,
                    deps.blobs,
                    deps.namer,
                    school_id=state.school_id,
                    area=state.area,
                    idle_before=idle_before,
                    now=now,
                ):
                    demoted.append((state.school_id, state.area))
        return demoted


def shred_closed_schools(
    deps: CacheDeps, closed_schools: Sequence[tuple[str, datetime]]
) -> list[str] | None:
    """cache.shred_closed_schools: destroy the keys, then the data, of closed schools.

    `closed_schools` is every (school_id, closed_at) of a closed school, from the broker.
    """
    now = deps.clock.now()
    with _job_lock(deps, SHRED_CLOSED_SCHOOLS, now) as acquired:
        if not acquired:
            return None
        with unit_of_work(deps.engine) as session:
            return purge.shred_closed_schools(
                session,
                deps.keyring,
                deps.key_store,
                deps.blobs,
                namer=deps.namer,
                closed_schools=closed_schools,
                now=now,
                retention_days=deps.settings.closed_school_retention_days,
                hot=deps.hot,
            )


def rewrap_keys(deps: CacheDeps, kek_id: str) -> int | None:
    """cache.rewrap_keys: rewrap every data key under the current KEK `kek_id`."""
    now = deps.clock.now()
    with _job_lock(deps, REWRAP_KEYS, now) as acquired:
        if not acquired:
            return None
        return deps.keyring.rewrap_all(kek_id)
