"""The cache's edge in an API process: what a hot read needs, held in process memory.

Serving a hot page needs the area's state (its data_version and as_of name the page) and
the sealed page itself.  Asking SQL and Redis for them on every read costs several times
more than the rest of the request, so each API process keeps:
- the states of the areas it has served (`AreaState` snapshots);
- sealed pages exactly as stored in Redis (AES-256-GCM ciphertext), in a byte-bounded LRU.
  A page is opened for each response and dropped with it: no plaintext outlives the
  request that sent it, and a memory dump shows what a Redis dump would.

Both are dropped for an area whenever its hot pages are invalidated: `HotCache` publishes
on `cache.hot.CHANNEL` after an upload, a purge or a shred commits, and every process hears it
within milliseconds (`broker.invalidation`); the process that made the change also drops
them at once, before answering (`CacheService.invalidate`).  As backstops for a lost
message, an entry never outlives `max_age` (or `degraded_max_age` while the listener is
not subscribed) nor the hot-tier TTL from when it was fetched.  Hot keys name the
data_version, so once a process knows a newer state it can never serve an older page.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Final, TypeAlias

import orjson
import redis
from sqlalchemy import Engine

from cache import repository as repo
from cache.freshness import is_stale
from cache.hot import AsyncHotCache, HotPage, PageRef, page_ref
from cache.keys import KeyRing
from cache.naming import Namer
from cache.service import PageQuery, ServedPage, hot_cacheable
from cache.warm import TOUCH_INTERVAL_SECONDS, mark_read

log = logging.getLogger(__name__)

EVERYTHING: Final = "*"
DEFAULT_MAX_PAGE_BYTES_HELD: Final = 64 << 20
MAX_REFS_HELD: Final = 20_000
MAX_HELD_CURSOR: Final = 512
# What holding a page costs beyond its bytes (its entry, index and bookkeeping objects),
# counted against the budget so that many small pages cannot outgrow it.
PAGE_OVERHEAD_BYTES: Final = 600

# What names a page: school, area, data_version, stale, fields, updated_since, cursor, limit
# and the audience the page was narrowed to.
RefQuery: TypeAlias = tuple[
    str, str, int, bool, frozenset[str] | None, datetime | None, str | None, int, str
]


class _HeldPage:
    __slots__ = ("deadline", "key", "sealed", "where")

    def __init__(self, key: str, where: tuple[str, str], sealed: bytes, deadline: float) -> None:
        self.key = key
        self.where = where
        self.sealed = sealed
        self.deadline = deadline


class EdgeCache:
    """Area states and sealed pages of one process; a subscriber on `cache.hot.CHANNEL`.

    Reads come from the event loop; invalidations also from threads (an upload's commit):
    every change happens under the lock, and pages are indexed by area, so dropping one
    area costs what that area holds, not what the process holds.
    """

    def __init__(
        self,
        *,
        page_ttl_seconds: float,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES_HELD,
        # The worst case, should a publish itself fail: another process serves the
        # area's previous version this long.  A reload is one indexed SELECT per area.
        max_age: float = 5.0,
        degraded_max_age: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._page_ttl = page_ttl_seconds
        self._max_page_bytes = max_page_bytes
        self._max_age = max_age
        self._degraded_max_age = degraded_max_age
        self._age = degraded_max_age  # until the listener has subscribed
        self._monotonic = monotonic
        self._states: dict[tuple[str, str], tuple[repo.AreaState, float]] = {}
        # A page's name (an HMAC) and ETag per query, so a repeated read derives neither.
        self._refs: dict[RefQuery, tuple[PageRef, str]] = {}
        self._pages: OrderedDict[str, _HeldPage] = OrderedDict()
        self._by_area: dict[tuple[str, str], set[str]] = {}
        self._page_bytes = 0
        self._generation = 0
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Changes with every invalidation: a load begun before one must not be kept."""
        return self._generation

    @property
    def page_bytes(self) -> int:
        """Memory the held pages are counted as: their bytes plus a per-page overhead."""
        return self._page_bytes

    def state(self, school_id: str, area: str) -> repo.AreaState | None:
        held = self._states.get((school_id, area))
        if held is None:
            return None
        if self._monotonic() >= held[1]:
            with self._lock:
                if self._states.get((school_id, area)) is held:
                    del self._states[(school_id, area)]
            return None
        return held[0]

    def hold_state(self, state: repo.AreaState, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                deadline = self._monotonic() + self._age
                self._states[(state.school_id, state.area)] = (state, deadline)

    def replace_state(self, state: repo.AreaState) -> None:
        """Hold `state` in place of the same version's snapshot, keeping its deadline (a
        read recorded here).  A state of another version is left alone: the read began
        before an invalidation, and what is held now is newer."""
        with self._lock:
            held = self._states.get((state.school_id, state.area))
            if (
                held is not None
                and held[0].data_version == state.data_version
                and held[0].as_of == state.as_of
            ):
                self._states[(state.school_id, state.area)] = (state, held[1])

    def ref(self, query: RefQuery) -> tuple[PageRef, str] | None:
        return self._refs.get(query)

    def hold_ref(self, query: RefQuery, ref: PageRef, etag: str) -> None:
        cursor = query[6]
        if cursor is not None and len(cursor) > MAX_HELD_CURSOR:
            return  # not a cursor we issued (ours are short): not worth the memory
        with self._lock:
            if len(self._refs) >= MAX_REFS_HELD:
                self._refs.clear()  # names are cheap to derive again; memory is bounded
            self._refs[query] = (ref, etag)

    def page(self, key: str) -> bytes | None:
        held = self._pages.get(key)
        if held is None:
            return None
        with self._lock:
            if self._pages.get(key) is not held:
                return None  # dropped meanwhile
            if self._monotonic() >= held.deadline:
                self._drop_page(key)
                return None
            self._pages.move_to_end(key)
        return held.sealed

    def hold_page(self, ref: PageRef, sealed: bytes, generation: int) -> None:
        if _cost(sealed) > self._max_page_bytes:
            return
        where = (ref.school_id, ref.area)
        with self._lock:
            if generation != self._generation:
                return
            self._drop_page(ref.key)
            deadline = self._monotonic() + min(self._age, self._page_ttl)
            self._pages[ref.key] = _HeldPage(ref.key, where, sealed, deadline)
            self._by_area.setdefault(where, set()).add(ref.key)
            self._page_bytes += _cost(sealed)
            while self._page_bytes > self._max_page_bytes:
                self._drop_page(next(iter(self._pages)))

    def apply(self, message: str) -> None:
        """`[school_id, area]`, `[school_id, null]` (every area) or `*` (everything)."""
        school_id, area = _parse_message(message)
        self.drop(school_id, area)

    def drop(self, school_id: str | None, area: str | None) -> None:
        """Forget an area (`area` None: every area of the school; both None: everything)."""
        with self._lock:
            self._generation += 1
            self._refs.clear()  # keyed by data_version, but they hold no data: drop them all
            if school_id is None:
                self._clear()
                return
            if area is not None:
                areas = [(school_id, area)]
            else:
                held = set(self._states) | set(self._by_area)
                areas = [where for where in held if where[0] == school_id]
            for where in areas:
                self._states.pop(where, None)
                for key in list(self._by_area.get(where, ())):
                    self._drop_page(key)

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self._age = self._max_age if connected else self._degraded_max_age
            self._generation += 1
            self._clear()

    def _clear(self) -> None:
        self._states.clear()
        self._refs.clear()
        self._pages.clear()
        self._by_area.clear()
        self._page_bytes = 0

    def _drop_page(self, key: str) -> None:
        held = self._pages.pop(key, None)
        if held is not None:
            self._page_bytes -= _cost(held.sealed)
            keys = self._by_area.get(held.where)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_area[held.where]


def _cost(sealed: bytes) -> int:
    return len(sealed) + PAGE_OVERHEAD_BYTES


def _parse_message(message: str) -> tuple[str | None, str | None]:
    """(school, area), (school, None) for the whole school, or (None, None) for everything,
    which is also what an unreadable message means: assume the worst."""
    if message == EVERYTHING:
        return None, None
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        parsed = None
    if (
        isinstance(parsed, list)
        and len(parsed) == 2
        and isinstance(parsed[0], str)
        and isinstance(parsed[1], str | None)
    ):
        return parsed[0], parsed[1]
    log.warning("malformed cache invalidation %r: dropping everything", message[:200])
    return None, None


class HotReader:
    """Serves hot pages on the event loop: no SQL, no thread and, once a page is held, no
    Redis round trip.  Anything else (never cached, a page not hot yet, a key or secret
    not loaded in this process) is left to `CacheService.read_page` in a thread.
    """

    def __init__(
        self,
        edge: EdgeCache,
        hot: AsyncHotCache,
        keyring: KeyRing,
        namer: Namer,
        engine: Engine,
    ) -> None:
        self.edge = edge
        self.hot = hot
        self.keyring = keyring
        self.namer = namer
        self.engine = engine
        self._touches: set[asyncio.Task[None]] = set()

    def held(self, query: PageQuery, now: datetime) -> ServedPage | None:
        """The page if everything it needs is in this process's memory: no I/O, no await."""
        if not self.namer.ready or not hot_cacheable(query.area, query.fields):
            return None
        state = self.edge.state(query.school_id, query.area)
        if state is None or state.as_of is None:
            return None
        named = self._named(state, query, now)
        sealed = self.edge.page(named[0].key)
        if sealed is None or not self.keyring.holds(state.school_id, self.hot.key_version(sealed)):
            return None
        return self._served(state, named, self.hot.open(named[0], sealed), now)

    async def read(self, query: PageQuery, now: datetime) -> ServedPage | None:
        """The page if it is hot; None sends the caller to the full read path."""
        if not self.namer.ready or not hot_cacheable(query.area, query.fields):
            return None
        state = self.edge.state(query.school_id, query.area) or await self._load_state(
            query.school_id, query.area
        )
        if state is None or state.as_of is None:
            return None
        named = self._named(state, query, now)
        page = await self._page(named[0])
        if page is None:
            return None
        return self._served(state, named, page, now)

    def _named(
        self, state: repo.AreaState, query: PageQuery, now: datetime
    ) -> tuple[PageRef, str, bool]:
        """The page's name and ETag (derived once per query), and whether it is stale."""
        assert state.as_of is not None
        stale = is_stale(state.area, state.as_of, now)
        version = state.data_version
        key = (
            state.school_id,
            state.area,
            version,
            stale,
            query.fields,
            query.updated_since,
            query.cursor,
            query.limit,
            query.audience,
        )
        named = self.edge.ref(key)
        if named is None:
            ref = page_ref(
                self.namer,
                school_id=state.school_id,
                area=state.area,
                data_version=version,
                stale=stale,
                fields=query.fields,
                updated_since=query.updated_since,
                cursor=query.cursor,
                limit=query.limit,
                audience=query.audience,
            )
            named = (ref, self.namer.etag(ref.key))
            self.edge.hold_ref(key, *named)
        return named[0], named[1], stale

    def _served(
        self,
        state: repo.AreaState,
        named: tuple[PageRef, str, bool],
        page: HotPage,
        now: datetime,
    ) -> ServedPage:
        assert state.as_of is not None
        self._touch(state, now)
        ref, etag, stale = named
        return ServedPage(
            page.body, etag, state.as_of, stale, ref.data_version, "hot", page.record_count
        )

    async def stop(self) -> None:
        """Let read records in flight finish (each is one short transaction)."""
        if self._touches:
            await asyncio.wait(self._touches, timeout=5)

    async def _load_state(self, school_id: str, area: str) -> repo.AreaState | None:
        generation = self.edge.generation

        def load() -> repo.AreaState | None:
            with self.engine.connect() as conn:
                return repo.area_state(conn, school_id, area)

        state = await asyncio.to_thread(load)
        if state is not None:
            self.edge.hold_state(state, generation)
        return state

    async def _page(self, ref: PageRef) -> HotPage | None:
        sealed = self.edge.page(ref.key)
        if sealed is None:
            generation = self.edge.generation
            try:
                sealed = await self.hot.fetch_sealed(ref)
            except redis.RedisError:
                log.warning("hot tier unavailable; serving from the warm tier")
                return None
            if sealed is None:
                return None
            self.edge.hold_page(ref, sealed, generation)
        if not self.keyring.holds(ref.school_id, self.hot.key_version(sealed)):
            # Unwrapping the school's key reads the key store: not on the event loop.
            return await asyncio.to_thread(self.hot.open, ref, sealed)
        return self.hot.open(ref, sealed)

    def _touch(self, state: repo.AreaState, now: datetime) -> None:
        """Record the read for the demotion and refresh policies, at most hourly per area."""
        last = state.last_read_at
        if last is not None and (now - last).total_seconds() < TOUCH_INTERVAL_SECONDS:
            return
        self.edge.replace_state(dataclasses.replace(state, last_read_at=now, last_requested_at=now))
        task = asyncio.create_task(
            asyncio.to_thread(mark_read, self.engine, state.school_id, state.area, now)
        )
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)
