"""The hot tier: ready-to-serve page bodies, sealed, in Redis with a TTL on every key.

A hot page is the exact JSON body of one partner response, sealed for
Slot(kind=PAGE, record_id=<its Redis key>, record_version=data_version).  Its key is an
HMAC of everything the body depends on (school, area, data_version, staleness, fields,
updated_since, cursor, limit), so names reveal nothing and a change of data_version makes
old pages unreachable at once; `invalidate_area` also drops them (purge, shred).

Dropping an area's pages also publishes `[school_id, area]` on `CHANNEL`, so every API
process forgets what it holds of the area (`cache.edge`).

Every key carries a TTL: the embedded Redis evicts with `volatile-lru`, which only ever
evicts keys with a TTL, so the cache can fill memory without evicting Celery's queue.
The sync and async clients share the encoding below and differ only in their I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, cast

import orjson
import redis
import redis.asyncio as aredis

from cache.crypto import Slot, SlotKind, key_version_of, open_sealed, seal
from cache.keys import KeyRing
from cache.naming import Namer, instant_key

# A page this large is better served from the warm tier than held in Redis memory.
DEFAULT_MAX_PAGE_BYTES: Final = 1 << 20
CHANNEL: Final = "mb:cache:invalidate"


def invalidation_message(school_id: str, area: str) -> str:
    return orjson.dumps([school_id, area]).decode()


@dataclass(frozen=True, slots=True)
class PageRef:
    """Where one page body lives in Redis and which slot it is sealed for."""

    school_id: str
    area: str
    data_version: int
    key: str
    # Built once: on the hot path every microsecond counts against a bare GET.
    slot: Slot = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        slot = Slot(self.school_id, self.area, self.key, self.data_version, SlotKind.PAGE)
        object.__setattr__(self, "slot", slot)


def page_ref(
    namer: Namer,
    *,
    school_id: str,
    area: str,
    data_version: int,
    stale: bool,
    fields: frozenset[str] | None,
    updated_since: datetime | None,
    cursor: str | None,
    limit: int,
    audience: str = "",
) -> PageRef:
    """`audience`: the fingerprint of the pupils a page was narrowed to ("" none), so a
    page built for one partner's audience is never another's."""
    projection = None if fields is None else sorted(fields)
    since = instant_key(updated_since)
    parts = (school_id, area, data_version, stale, projection, since, cursor, limit)
    key = namer.hot_key(*parts, audience) if audience else namer.hot_key(*parts)
    return PageRef(school_id, area, data_version, key)


_COUNT: Final = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class HotPage:
    body: bytes | memoryview  # a view past the count: serving a page copies nothing
    record_count: int


class _Codec:
    def __init__(
        self, keyring: KeyRing, namer: Namer, ttl_seconds: int, max_page_bytes: int
    ) -> None:
        if ttl_seconds < 1:
            raise ValueError("hot pages need a TTL of at least one second")
        self.keyring = keyring
        self.namer = namer
        self.ttl = ttl_seconds
        self.max_page_bytes = max_page_bytes

    def open(self, ref: PageRef, sealed: bytes | None) -> HotPage | None:
        if sealed is None:
            return None
        plain = open_sealed(self.keyring, ref.slot, sealed)
        (count,) = _COUNT.unpack_from(plain)
        return HotPage(memoryview(plain)[_COUNT.size :], count)

    def seal(self, ref: PageRef, body: bytes, record_count: int) -> bytes | None:
        if len(body) > self.max_page_bytes:
            return None
        # The record count travels sealed with the page, so serving it (and logging how
        # many records left) never has to parse the body.
        return seal(self.keyring, ref.slot, _COUNT.pack(record_count) + body)

    def index_key(self, school_id: str, area: str) -> str:
        return self.namer.hot_index_key(school_id, area)


class HotCache:
    """Hot pages through a synchronous Redis client."""

    def __init__(
        self,
        client: redis.Redis,
        keyring: KeyRing,
        namer: Namer,
        *,
        ttl_seconds: int,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
    ) -> None:
        self._client = client
        self._codec = _Codec(keyring, namer, ttl_seconds, max_page_bytes)

    def get_page(self, ref: PageRef) -> bytes | memoryview | None:
        """The page body, or None on a miss; raises if the stored page fails to open."""
        page = self.fetch(ref)
        return None if page is None else page.body

    def fetch(self, ref: PageRef) -> HotPage | None:
        """The page with its record count, or None on a miss."""
        return self._codec.open(ref, cast("bytes | None", self._client.get(ref.key)))

    def put_page(self, ref: PageRef, body: bytes, record_count: int = 0) -> bool:
        sealed = self._codec.seal(ref, body, record_count)
        if sealed is None:
            return False
        index = self._codec.index_key(ref.school_id, ref.area)
        with self._client.pipeline(transaction=False) as pipe:
            pipe.set(ref.key, sealed, ex=self._codec.ttl)
            # The index lives as long as its newest member, so it never outlives them all.
            pipe.sadd(index, ref.key)
            pipe.expire(index, self._codec.ttl)
            pipe.execute()
        return True

    def invalidate_area(self, school_id: str, area: str) -> int:
        """Drop every hot page of the area; return how many keys were removed."""
        index = self._codec.index_key(school_id, area)
        # The announcement goes with the read of the index: every upload drops its area, and
        # most areas have no hot page, so most drops are this one round trip.  Announcing
        # first is safe: the caller has committed the new data_version, which is all the
        # listeners read again.
        with self._client.pipeline(transaction=False) as pipe:
            pipe.smembers(index)
            pipe.publish(CHANNEL, invalidation_message(school_id, area))
            members = cast("set[bytes]", pipe.execute()[0])
        if not members:
            return 0
        # One key per command: pages of an area may sit on different Cluster slots.
        with self._client.pipeline(transaction=False) as pipe:
            for key in [*members, index.encode()]:
                pipe.unlink(key)
            removed = pipe.execute()
        return sum(int(n) for n in removed[:-1])


class AsyncHotCache:
    """Hot pages through an asyncio Redis client, for async request handlers."""

    def __init__(
        self,
        client: aredis.Redis,
        keyring: KeyRing,
        namer: Namer,
        *,
        ttl_seconds: int,
        max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES,
    ) -> None:
        self._client = client
        self._codec = _Codec(keyring, namer, ttl_seconds, max_page_bytes)

    async def get_page(self, ref: PageRef) -> bytes | memoryview | None:
        page = await self.fetch(ref)
        return None if page is None else page.body

    async def fetch(self, ref: PageRef) -> HotPage | None:
        return self._codec.open(ref, await self.fetch_sealed(ref))

    async def fetch_sealed(self, ref: PageRef) -> bytes | None:
        """The page as stored (sealed), or None on a miss."""
        return cast("bytes | None", await self._client.get(ref.key))

    def open(self, ref: PageRef, sealed: bytes) -> HotPage:
        """Open a sealed page; raises if it fails authentication for `ref`."""
        page = self._codec.open(ref, sealed)
        assert page is not None
        return page

    @staticmethod
    def key_version(sealed: bytes) -> int:
        """The data-key version a sealed page names (unauthenticated until opened)."""
        return key_version_of(sealed)

    async def put_page(self, ref: PageRef, body: bytes, record_count: int = 0) -> bool:
        sealed = self._codec.seal(ref, body, record_count)
        if sealed is None:
            return False
        index = self._codec.index_key(ref.school_id, ref.area)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.set(ref.key, sealed, ex=self._codec.ttl)
            pipe.sadd(index, ref.key)
            pipe.expire(index, self._codec.ttl)
            await pipe.execute()
        return True

    async def invalidate_area(self, school_id: str, area: str) -> int:
        index = self._codec.index_key(school_id, area)
        async with self._client.pipeline(transaction=False) as pipe:  # as `HotCache`'s
            pipe.smembers(index)
            pipe.publish(CHANNEL, invalidation_message(school_id, area))
            members = cast("set[bytes]", (await pipe.execute())[0])
        if not members:
            return 0
        async with self._client.pipeline(transaction=False) as pipe:
            for key in [*members, index.encode()]:
                pipe.unlink(key)
            removed = await pipe.execute()
        return sum(int(n) for n in removed[:-1])
