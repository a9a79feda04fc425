"""The per-process decision cache: when it reloads, and invalidation across processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from broker.clock import FrozenClock
from broker.invalidation import InvalidationListener
from consent.decisions import (
    CHANNEL,
    DecisionCache,
    invalidation_message,
    publish_invalidations,
)
from consent.engine import ConsentTimeline, decide, fold
from consent.events import Granted, Revoked
from consent.repository import ConsentRepository
from consent.service import ConsentService
from tests.consent.test_engine import ALL_AREAS, History, edges, histories
from tests.support.consent_db import ConsentDb, consent_db

T0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
H = timedelta(hours=1)
GRACE = 72 * H
BASIC = "students.basic"


def timeline(*, end_hours: float | None = None) -> ConsentTimeline:
    events: list[Granted | Revoked] = [
        Granted(
            consent_id="con_1",
            at=T0,
            actor="admin:a",
            partner_id="prt_1",
            school_id="sch_a",
            areas=frozenset({BASIC}),
        )
    ]
    if end_hours is not None:
        events.append(
            Revoked(consent_id="con_1", at=T0, actor="admin:a", end_at=T0 + end_hours * H)
        )
    return fold(events, GRACE)


class Loader:
    def __init__(self, timelines: Sequence[ConsentTimeline]) -> None:
        self.timelines = tuple(timelines)
        self.calls = 0

    def __call__(self, partner_id: str, school_id: str) -> Sequence[ConsentTimeline]:
        self.calls += 1
        return self.timelines


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_hit_needs_no_load_and_answers_like_the_engine() -> None:
    loader = Loader([timeline()])
    cache = DecisionCache(loader)
    first = cache.decide_cached("prt_1", "sch_a", BASIC, T0 + H)
    again = cache.decide_cached("prt_1", "sch_a", [BASIC], T0 + 2 * H)
    assert (first.allowed, first.reason, first.consent_id) == (True, "granted", "con_1")
    assert again.allowed
    assert cache.decide_cached("prt_1", "sch_a", "behaviour", T0).reason == "not_granted"
    assert loader.calls == 1


async def test_async_decisions_load_off_the_event_loop_once() -> None:
    loader = Loader([timeline()])
    cache = DecisionCache(loader)
    first = await cache.decide("prt_1", "sch_a", [BASIC], T0 + H)
    second = await cache.decide("prt_1", "sch_a", [BASIC], T0 + 2 * H)
    assert first is second
    assert first.allowed
    assert loader.calls == 1


def test_an_entry_never_outlives_the_next_change_of_its_consent() -> None:
    loader = Loader([timeline(end_hours=2)])
    cache = DecisionCache(loader)
    assert cache.decide_cached("prt_1", "sch_a", BASIC, T0 + H).allowed
    assert cache.decide_cached("prt_1", "sch_a", BASIC, T0 + 1.9 * H).allowed
    assert loader.calls == 1
    assert cache.decide_cached("prt_1", "sch_a", BASIC, T0 + 2 * H).reason == "revoked"
    assert loader.calls == 2  # the end reached: reloaded, in case the history changed


def test_no_consent_is_cached_too_and_dropped_by_invalidation() -> None:
    loader = Loader([])
    cache = DecisionCache(loader)
    assert cache.decide_cached("prt_1", "sch_a", BASIC, T0).reason == "no_consent"
    assert cache.decide_cached("prt_1", "sch_a", BASIC, T0).reason == "no_consent"
    assert loader.calls == 1
    cache.apply(invalidation_message("sch_a", "prt_1"))
    loader.timelines = (timeline(),)
    assert cache.decide_cached("prt_1", "sch_a", BASIC, T0).allowed
    cache.apply("sch_a:*")
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    cache.apply("*")
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    assert loader.calls == 4


def test_entries_age_out_after_one_second_until_a_listener_has_subscribed() -> None:
    clock = Monotonic()
    loader = Loader([timeline()])
    cache = DecisionCache(loader, max_age=300.0, degraded_max_age=1.0, monotonic=clock)
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    clock.now += 0.99
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    assert loader.calls == 1
    clock.now += 0.01
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    assert loader.calls == 2
    cache.set_connected(True)
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    clock.now += 299
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    assert loader.calls == 3
    clock.now += 1
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    assert loader.calls == 4


def test_a_load_racing_an_invalidation_is_not_kept() -> None:
    cache: DecisionCache
    calls = 0

    def loader(partner_id: str, school_id: str) -> Sequence[ConsentTimeline]:
        nonlocal calls
        calls += 1
        if calls == 1:
            cache.invalidate(school_id, partner_id)  # the change lands while we read
        return (timeline(),)

    cache = DecisionCache(loader)
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    assert len(cache) == 0
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    cache.decide_cached("prt_1", "sch_a", BASIC, T0)
    assert calls == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.data())
def test_cached_answers_are_the_engines_answers(history: History, data: st.DataObject) -> None:
    """Whenever the entry was loaded and whatever it is asked, it says what `decide` says."""
    events, grace = history
    timeline = fold(events, grace)
    points = edges(events, grace)
    loaded_at = data.draw(st.sampled_from(points))
    cache = DecisionCache(Loader([timeline]))
    cache.decide_cached("prt_1", "sch_1", BASIC, loaded_at)
    for when in data.draw(st.lists(st.sampled_from(points), min_size=1, max_size=8)):
        for area in ALL_AREAS:
            for operation in ("read", "write"):
                want = decide([timeline], area, when, operation)
                assert cache.decide_cached("prt_1", "sch_1", area, when, operation) == want
                assert cache.decide_cached("prt_1", "sch_1", [area], when, operation) == want
        many = cache.decide_cached("prt_1", "sch_1", ALL_AREAS, when)
        assert many == decide([timeline], ALL_AREAS, when)


def test_a_full_cache_evicts_its_oldest_entries() -> None:
    cache = DecisionCache(Loader([]), max_entries=10)
    for n in range(25):
        cache.decide_cached(f"prt_{n}", "sch_a", BASIC, T0)
    assert len(cache) <= 10


# ---------------------------------------------------------------------------------------
# Across processes: each "process" has its own cache, listener and Redis connections.


@pytest.fixture
def db(tmp_path: Path, clock: FrozenClock) -> Iterator[ConsentDb]:
    yield from consent_db(f"sqlite:///{tmp_path / 'consent.db'}", tmp_path, clock)


def db_loader(db: ConsentDb) -> Loader:
    def load(partner_id: str, school_id: str) -> Sequence[ConsentTimeline]:
        with Session(db.engine) as session:
            return ConsentRepository(session).timelines(school_id, partner_id, GRACE)

    return load  # type: ignore[return-value]


def grant(db: ConsentDb) -> str:
    with db.unit() as session:
        view = ConsentService(session, grace=GRACE).grant(
            school_id="sch_a",
            partner_id="prt_1",
            areas=[BASIC],
            mode="read",
            requested=[BASIC],
            actor="admin:a",
            now=db.clock.now(),
        )
    return view.consent.id


async def start_process(
    db: ConsentDb, redis_url: str
) -> tuple[DecisionCache, InvalidationListener]:
    cache = DecisionCache(db_loader(db))
    listener = InvalidationListener(
        {CHANNEL: cache}, redis_url, ping_interval=0.2, retry_delay=0.05
    )
    await listener.start()
    await asyncio.wait_for(listener.subscribed.wait(), 5)
    return cache, listener


async def test_a_suspension_in_one_process_is_enforced_by_another_within_a_second(
    db: ConsentDb, redis_url: str, redis_client: redis.Redis
) -> None:
    consent_id = grant(db)
    now = db.clock.now()
    (cache_a, listener_a), (cache_b, listener_b) = [
        await start_process(db, redis_url) for _ in range(2)
    ]
    try:
        assert cache_a.decide_cached("prt_1", "sch_a", BASIC, now).allowed
        assert cache_b.decide_cached("prt_1", "sch_a", BASIC, now).allowed
        with db.unit() as session:  # process A: the admin's request
            service = ConsentService(session, grace=GRACE)
            service.suspend(consent_id, school_id="sch_a", reason="x", actor="admin:a", now=now)
        started = time.monotonic()
        cache_a.invalidate("sch_a", "prt_1")
        publish_invalidations(redis_client, service.changed)
        assert not cache_a.decide_cached("prt_1", "sch_a", BASIC, now).allowed
        while cache_b.decide_cached("prt_1", "sch_a", BASIC, now).allowed:
            assert time.monotonic() - started < 1.0, "process B still allows after 1 s"
            await asyncio.sleep(0.005)
        assert cache_b.decide_cached("prt_1", "sch_a", BASIC, now).reason == "suspended"
    finally:
        await listener_a.stop()
        await listener_b.stop()


async def test_a_lost_connection_clears_the_cache_when_the_listener_is_back(
    db: ConsentDb, redis_url: str, redis_client: redis.Redis
) -> None:
    grant(db)
    cache, listener = await start_process(db, redis_url)
    try:
        cache.decide_cached("prt_1", "sch_a", BASIC, db.clock.now())
        assert len(cache) == 1
        assert redis_client.pubsub_numsub(CHANNEL)[0][1] == 1
        redis_client.client_kill_filter(_type="pubsub")
        deadline = time.monotonic() + 5
        # Whatever was missed meanwhile, nothing loaded before may survive the reconnection.
        while not (cache.connected and len(cache) == 0):
            assert time.monotonic() < deadline, "the listener did not come back"
            await asyncio.sleep(0.01)
        assert redis_client.pubsub_numsub(CHANNEL)[0][1] == 1
    finally:
        await listener.stop()
    assert not cache.connected
