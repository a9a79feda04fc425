"""The cache's edge in an API process: what invalidations drop, backstops, byte budget."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
import redis
import redis.asyncio as aredis

from broker.invalidation import InvalidationListener
from cache.edge import PAGE_OVERHEAD_BYTES as O
from cache.edge import EdgeCache
from cache.hot import CHANNEL, AsyncHotCache, HotCache, PageRef, invalidation_message
from cache.keys import InMemoryDataKeyStore, KeyRing, LocalKeyProvider
from cache.models import CacheTier
from cache.naming import Namer
from cache.repository import AreaState
from tests.cache.conftest import OTHER_SCHOOL, SCHOOL
from tests.conftest import T0
from tests.support.monotonic import FakeMonotonic

BASIC, CONTACTS = "students.basic", "contacts"
WHERE = [(SCHOOL, BASIC), (SCHOOL, CONTACTS), (OTHER_SCHOOL, BASIC)]


@pytest.fixture
def tick() -> FakeMonotonic:
    return FakeMonotonic()


def area_state(school_id: str, area: str, data_version: int = 1) -> AreaState:
    return AreaState(
        school_id=school_id,
        area=area,
        as_of=T0,
        purge_after=T0 + timedelta(days=30),
        tier=CacheTier.WARM,
        data_version=data_version,
        last_seq=data_version,
        record_count=3,
        created_at=T0,
        updated_at=T0,
        last_read_at=None,
        last_requested_at=None,
        refresh_requested_at=None,
        cold_blob_key=None,
    )


def ref(school_id: str, area: str, key: str | None = None, data_version: int = 1) -> PageRef:
    return PageRef(school_id, area, data_version, key or f"mb:hot:{school_id}:{area}")


def edge_cache(
    tick: FakeMonotonic,
    *,
    page_ttl_seconds: float = 900,
    max_age: float = 30,
    max_page_bytes: int = 1 << 20,
) -> EdgeCache:
    """An edge whose listener has subscribed (entries live `max_age`, not one second)."""
    edge = EdgeCache(
        page_ttl_seconds=page_ttl_seconds,
        max_page_bytes=max_page_bytes,
        max_age=max_age,
        degraded_max_age=1,
        monotonic=tick,
    )
    edge.set_connected(True)
    return edge


def fill(edge: EdgeCache) -> None:
    """A state and a 10-byte page for each of WHERE."""
    for school_id, area in WHERE:
        edge.hold_state(area_state(school_id, area), edge.generation)
        edge.hold_page(ref(school_id, area), b"0123456789", edge.generation)


def held(edge: EdgeCache) -> list[tuple[str, str]]:
    """Where both the state and the page are still held (asserting it is never just one)."""
    found = []
    for school_id, area in WHERE:
        state = edge.state(school_id, area) is not None
        page = edge.page(ref(school_id, area).key) is not None
        assert state == page, (school_id, area)
        if state:
            found.append((school_id, area))
    return found


def test_an_area_message_drops_that_area_only(tick: FakeMonotonic) -> None:
    edge = edge_cache(tick)
    fill(edge)
    assert held(edge) == WHERE
    assert edge.page_bytes == 30 + 3 * O
    before = edge.generation
    edge.apply(invalidation_message(SCHOOL, BASIC))
    assert held(edge) == [(SCHOOL, CONTACTS), (OTHER_SCHOOL, BASIC)]
    assert edge.page_bytes == 20 + 2 * O
    assert edge.generation != before


def test_a_school_message_drops_every_area_of_that_school(tick: FakeMonotonic) -> None:
    edge = edge_cache(tick)
    fill(edge)
    edge.apply(f'["{SCHOOL}", null]')
    assert held(edge) == [(OTHER_SCHOOL, BASIC)]
    assert edge.page_bytes == 10 + O


@pytest.mark.parametrize(
    "message",
    ["*", "not json", "", "null", '["only-a-school"]', f'["{SCHOOL}", "{BASIC}", "x"]', "[1,2,3]"],
)
def test_everything_and_unreadable_messages_drop_everything(
    tick: FakeMonotonic, message: str
) -> None:
    edge = edge_cache(tick)
    fill(edge)
    edge.apply(message)
    assert held(edge) == []
    assert edge.page_bytes == 0


def test_refs_are_dropped_by_any_invalidation(tick: FakeMonotonic) -> None:
    edge = edge_cache(tick)
    query = (OTHER_SCHOOL, BASIC, 1, False, None, None, None, 100, "")
    edge.hold_ref(query, ref(OTHER_SCHOOL, BASIC), '"etag"')
    assert edge.ref(query) == (ref(OTHER_SCHOOL, BASIC), '"etag"')
    edge.apply(invalidation_message(SCHOOL, CONTACTS))
    assert edge.ref(query) is None


def test_connection_changes_clear_and_switch_the_backstop(tick: FakeMonotonic) -> None:
    edge = edge_cache(tick, max_age=30, page_ttl_seconds=900)
    fill(edge)
    edge.set_connected(False)
    assert held(edge) == []
    assert edge.page_bytes == 0

    fill(edge)  # degraded: kept one second
    tick.advance(0.999)
    assert held(edge) == WHERE
    tick.advance(0.001)
    assert held(edge) == []
    assert edge.page_bytes == 0

    fill(edge)
    edge.set_connected(True)  # messages sent meanwhile were lost: nothing survives
    assert held(edge) == []
    fill(edge)  # subscribed: kept max_age
    tick.advance(29.999)
    assert held(edge) == WHERE
    tick.advance(0.001)
    assert held(edge) == []


def test_a_new_edge_trusts_nothing_for_long_until_subscribed(tick: FakeMonotonic) -> None:
    edge = EdgeCache(page_ttl_seconds=900, max_age=30, degraded_max_age=1, monotonic=tick)
    edge.hold_state(area_state(SCHOOL, BASIC), edge.generation)
    tick.advance(1)
    assert edge.state(SCHOOL, BASIC) is None


@pytest.mark.parametrize(
    "invalidate",
    [
        lambda edge: edge.apply(invalidation_message(SCHOOL, BASIC)),
        lambda edge: edge.apply(invalidation_message(OTHER_SCHOOL, CONTACTS)),
        lambda edge: edge.set_connected(True),
        lambda edge: edge.set_connected(False),
    ],
    ids=["this-area", "another-area", "connected", "disconnected"],
)
def test_a_load_begun_before_an_invalidation_is_not_kept(
    tick: FakeMonotonic, invalidate: Callable[[EdgeCache], None]
) -> None:
    edge = edge_cache(tick)
    generation = edge.generation  # a load starts: SQL and Redis are read meanwhile
    invalidate(edge)
    edge.hold_state(area_state(SCHOOL, BASIC), generation)
    edge.hold_page(ref(SCHOOL, BASIC), b"old page", generation)
    assert edge.state(SCHOOL, BASIC) is None
    assert edge.page(ref(SCHOOL, BASIC).key) is None
    assert edge.page_bytes == 0
    # A load begun afterwards is kept.
    edge.hold_state(area_state(SCHOOL, BASIC, 2), edge.generation)
    edge.hold_page(ref(SCHOOL, BASIC), b"new page", edge.generation)
    assert edge.page(ref(SCHOOL, BASIC).key) == b"new page"
    state = edge.state(SCHOOL, BASIC)
    assert state is not None
    assert state.data_version == 2


def test_the_byte_budget_evicts_the_least_recently_used_page(tick: FakeMonotonic) -> None:
    edge = edge_cache(tick, max_page_bytes=100 + 2 * O)  # room for two 40-byte pages
    one, two, three = (ref(SCHOOL, BASIC, f"k{n}") for n in range(3))
    edge.hold_page(one, b"a" * 40, edge.generation)
    edge.hold_page(two, b"b" * 40, edge.generation)
    assert edge.page(one.key) == b"a" * 40  # one is now the most recently used
    edge.hold_page(three, b"c" * 40, edge.generation)
    assert edge.page(two.key) is None
    assert edge.page(one.key) == b"a" * 40
    assert edge.page(three.key) == b"c" * 40
    assert edge.page_bytes == 80 + 2 * O


def test_a_page_over_the_budget_is_not_held_and_a_replaced_one_counts_once(
    tick: FakeMonotonic,
) -> None:
    edge = edge_cache(tick, max_page_bytes=100 + O)
    page = ref(SCHOOL, BASIC)
    edge.hold_page(page, b"x" * 101, edge.generation)
    assert edge.page(page.key) is None
    assert edge.page_bytes == 0
    edge.hold_page(page, b"x" * 60, edge.generation)
    edge.hold_page(page, b"y" * 70, edge.generation)
    assert edge.page(page.key) == b"y" * 70
    assert edge.page_bytes == 70 + O


@pytest.mark.parametrize(("page_ttl", "max_age", "lives"), [(5, 30, 5), (50, 30, 30)])
def test_a_page_lives_no_longer_than_its_redis_ttl_nor_max_age(
    tick: FakeMonotonic, page_ttl: float, max_age: float, lives: float
) -> None:
    edge = edge_cache(tick, page_ttl_seconds=page_ttl, max_age=max_age)
    page = ref(SCHOOL, BASIC)
    edge.hold_page(page, b"sealed", edge.generation)
    edge.hold_state(area_state(SCHOOL, BASIC), edge.generation)
    tick.advance(lives - 0.001)
    assert edge.page(page.key) == b"sealed"
    tick.advance(0.001)
    assert edge.page(page.key) is None
    assert edge.page_bytes == 0
    # The state is not bound to a page's TTL, only to max_age.
    assert (edge.state(SCHOOL, BASIC) is not None) == (lives < max_age)


def test_replace_state_keeps_the_deadline(tick: FakeMonotonic) -> None:
    edge = edge_cache(tick, max_age=30)
    edge.hold_state(area_state(SCHOOL, BASIC), edge.generation)
    tick.advance(20)
    held = edge.state(SCHOOL, BASIC)
    assert held is not None
    edge.replace_state(dataclasses.replace(held, last_read_at=T0))
    edge.replace_state(area_state(SCHOOL, CONTACTS, 5))  # not held: stays not held
    state = edge.state(SCHOOL, BASIC)
    assert state is not None
    assert state.last_read_at == T0
    assert edge.state(SCHOOL, CONTACTS) is None
    tick.advance(10)
    assert edge.state(SCHOOL, BASIC) is None


def test_a_touch_by_a_read_begun_before_an_invalidation_keeps_the_newer_state(
    tick: FakeMonotonic,
) -> None:
    """HotReader._touch calls replace_state with the state its read began with; if the
    area was invalidated and reloaded meanwhile, that snapshot is older than the held one.
    """
    edge = edge_cache(tick)
    edge.hold_state(area_state(SCHOOL, BASIC, 1), edge.generation)
    began_with = edge.state(SCHOOL, BASIC)  # a read begins (then awaits Redis) ...
    assert began_with is not None
    edge.apply(invalidation_message(SCHOOL, BASIC))  # ... an upload is announced ...
    edge.hold_state(area_state(SCHOOL, BASIC, 2), edge.generation)  # ... another read loads
    edge.replace_state(dataclasses.replace(began_with, last_read_at=T0))  # the first touches
    state = edge.state(SCHOOL, BASIC)
    assert state is None or state.data_version == 2


# ---------------------------------------------------------------------------------------
# With the real Valkey: what HotCache publishes reaches every process's edge.


@pytest.fixture
def mem_ring(provider: LocalKeyProvider) -> KeyRing:
    return KeyRing(provider, InMemoryDataKeyStore())


@pytest.fixture
def mem_namer(mem_ring: KeyRing) -> Namer:
    return Namer(mem_ring)


@asynccontextmanager
async def listening(redis_url: str, count: int) -> AsyncIterator[list[EdgeCache]]:
    """`count` processes' edges, each subscribed through its own listener.

    Started inside the test, not in an async fixture: fixtures run on the session's
    event loop, and a listener there would not run while the test awaits on its own.
    """
    edges = [EdgeCache(page_ttl_seconds=900) for _ in range(count)]
    listeners = [
        InvalidationListener({CHANNEL: edge}, redis_url, ping_interval=0.2, retry_delay=0.05)
        for edge in edges
    ]
    try:
        for listener in listeners:
            await listener.start()
        for listener in listeners:
            await asyncio.wait_for(listener.subscribed.wait(), 5)
        yield edges
    finally:
        for listener in listeners:
            await listener.stop()


async def until_dropped(edge: EdgeCache, school_id: str, area: str) -> float:
    started = time.monotonic()
    while edge.state(school_id, area) is not None:
        assert time.monotonic() - started < 2.0, "the invalidation did not arrive"
        await asyncio.sleep(0.002)
    return time.monotonic() - started


def sync_invalidate(
    redis_url: str, ring: KeyRing, namer: Namer
) -> Callable[[str, str], Awaitable[int]]:
    async def invalidate(school_id: str, area: str) -> int:
        client = redis.Redis.from_url(redis_url)
        try:
            return HotCache(client, ring, namer, ttl_seconds=900).invalidate_area(school_id, area)
        finally:
            client.close()

    return invalidate


def async_invalidate(
    redis_url: str, ring: KeyRing, namer: Namer
) -> Callable[[str, str], Awaitable[int]]:
    async def invalidate(school_id: str, area: str) -> int:
        client = aredis.Redis.from_url(redis_url)
        try:
            hot = AsyncHotCache(client, ring, namer, ttl_seconds=900)
            return await hot.invalidate_area(school_id, area)
        finally:
            await client.aclose()

    return invalidate


@pytest.mark.parametrize("make", [sync_invalidate, async_invalidate], ids=["sync", "async"])
async def test_invalidate_area_reaches_every_listening_edge(
    redis_url: str,
    redis_client: redis.Redis,
    mem_ring: KeyRing,
    mem_namer: Namer,
    make: Callable[[str, KeyRing, Namer], Callable[[str, str], Awaitable[int]]],
) -> None:
    hot = HotCache(redis_client, mem_ring, mem_namer, ttl_seconds=900)
    page = ref(SCHOOL, BASIC, key="mb:test:page")
    assert hot.put_page(page, b"{}")
    async with listening(redis_url, 2) as edges:
        for edge in edges:
            fill(edge)
            assert held(edge) == WHERE
        assert await make(redis_url, mem_ring, mem_namer)(SCHOOL, BASIC) == 1
        for edge in edges:
            await until_dropped(edge, SCHOOL, BASIC)
            assert held(edge) == [(SCHOOL, CONTACTS), (OTHER_SCHOOL, BASIC)]
    assert redis_client.get(page.key) is None
    for edge in edges:  # stopped: nothing loaded before is trusted any more
        assert held(edge) == []


@pytest.mark.parametrize("make", [sync_invalidate, async_invalidate], ids=["sync", "async"])
async def test_an_area_without_hot_pages_is_still_announced(
    redis_url: str,
    mem_ring: KeyRing,
    mem_namer: Namer,
    make: Callable[[str, KeyRing, Namer], Callable[[str, str], Awaitable[int]]],
) -> None:
    # Most uploads drop an area no partner read since: one round trip, still announced.
    async with listening(redis_url, 2) as edges:
        for edge in edges:
            fill(edge)
        assert await make(redis_url, mem_ring, mem_namer)(SCHOOL, BASIC) == 0
        for edge in edges:
            await until_dropped(edge, SCHOOL, BASIC)
            assert held(edge) == [(SCHOOL, CONTACTS), (OTHER_SCHOOL, BASIC)]


def test_many_small_pages_are_counted_with_their_overhead(tick: FakeMonotonic) -> None:
    budget = 100 * (10 + O)
    edge = edge_cache(tick, max_page_bytes=budget)
    for n in range(1000):
        edge.hold_page(ref(SCHOOL, BASIC, f"k{n}"), b"z" * 10, edge.generation)
    assert edge.page_bytes == budget  # 100 pages, not the 1,000 that 10 bytes each allow
    assert edge.page("k999") == b"z" * 10
    assert edge.page("k899") is None


def test_dropping_an_area_while_another_thread_reads_pages_never_raises(
    tick: FakeMonotonic,
) -> None:
    """Uploads drop areas from the ingest's thread while the event loop reads pages."""
    edge = edge_cache(tick)
    pages = [ref(SCHOOL, BASIC if n % 2 else CONTACTS, f"k{n}") for n in range(2000)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                for page in pages[::7]:
                    edge.page(page.key)
                    edge.state(SCHOOL, BASIC)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(200):
            for page in pages:
                edge.hold_page(page, b"p", edge.generation)
            edge.hold_state(area_state(SCHOOL, BASIC), edge.generation)
            edge.drop(SCHOOL, BASIC)
            edge.drop(SCHOOL, None)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert edge.page_bytes == 0
