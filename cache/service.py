"""`CacheService`: the cache as the ingest and partner-read code see it.

Reads go hot -> warm -> cold: a hot page is served as stored; on a miss the warm tier
(promoting a cold area first) builds the page, which is then kept hot.  The service never
commits; the caller's unit of work does, and hot-page invalidation and blob cleanup run
after that commit.

On SQLite, call `apply_batch` before any other write in the same session: a school's first
data key is created through the key store's own connection, which would otherwise wait
for this session's write lock.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import redis
from sqlalchemy.orm import Session

from cache import repository as repo
from cache import warm
from cache.blobs import BlobStore
from cache.errors import NotCachedError
from cache.freshness import expires_at, is_stale, rfc3339
from cache.hot import HotCache, HotPage, PageRef, page_ref
from cache.keys import KeyRing
from cache.models import CacheTier
from cache.naming import Namer
from cache.unit import after_commit
from consent.areas import get_area

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PageQuery:
    """Which page of an area a partner asked for (parsed and validated already)."""

    school_id: str
    area: str
    fields: frozenset[str] | None
    updated_since: datetime | None
    limit: int
    cursor: str | None
    # The fingerprint of the pupils the page is narrowed to ("": not narrowed); part of the
    # page's name, so pages narrowed for one audience never serve another.
    audience: str = ""


@dataclass(frozen=True, slots=True)
class ServedPage:
    """A response body ready to send, with what the headers need."""

    body: bytes | memoryview  # {"data": [...], "meta": {"as_of", "stale", "next_cursor"}}
    etag: str
    as_of: datetime
    stale: bool
    data_version: int
    source: Literal["hot", "warm"]
    record_count: int


@dataclass(frozen=True, slots=True)
class AreaView:
    """One area of a school as admins and operators see it."""

    area: str
    cached: bool
    as_of: datetime | None
    stale: bool
    expires_at: datetime | None
    purge_after: datetime | None
    tier: CacheTier
    data_version: int
    record_count: int
    last_read_at: datetime | None
    last_requested_at: datetime | None
    refresh_requested_at: datetime | None


def encode_body(page: warm.Page) -> bytes:
    meta = {"as_of": rfc3339(page.as_of), "stale": page.stale, "next_cursor": page.next_cursor}
    return orjson.dumps({"data": page.records, "meta": meta})


class CacheService:
    def __init__(
        self,
        *,
        keyring: KeyRing,
        blobs: BlobStore,
        hot: HotCache | None,
        namer: Namer | None = None,
    ) -> None:
        self.keyring = keyring
        self.blobs = blobs
        self.hot = hot
        self.namer = namer or Namer(keyring)
        # In-process holders of the area's state (the API's edge), told at once: the
        # published message reaches them too, but perhaps after this process's next read.
        self._local_invalidations: list[Callable[[str, str], None]] = []

    def on_invalidate(self, callback: Callable[[str, str], None]) -> None:
        """Call `callback(school_id, area)` whenever this process invalidates an area."""
        self._local_invalidations.append(callback)

    def apply_batch(
        self,
        session: Session,
        *,
        school_id: str,
        area: str,
        mode: warm.Mode,
        records: Sequence[Mapping[str, Any]],
        deleted: Sequence[str],
        extracted_at: datetime,
        now: datetime,
        deletion_guard: warm.DeletionGuard | None = None,
    ) -> warm.ApplyResult:
        """See `cache.warm.apply_batch`; raises `StaleUploadError` for an older upload."""
        result = warm.apply_batch(
            session,
            self.keyring,
            blobs=self.blobs,
            namer=self.namer,
            school_id=school_id,
            area=area,
            mode=mode,
            records=records,
            deleted=deleted,
            extracted_at=extracted_at,
            now=now,
            deletion_guard=deletion_guard,
        )
        after_commit(session, lambda: self.invalidate(school_id, area))
        return result

    def read_page(
        self,
        session: Session,
        *,
        school_id: str,
        area: str,
        fields: frozenset[str] | None,
        updated_since: datetime | None,
        limit: int,
        cursor: str | None,
        now: datetime,
        audience: str = "",
        narrow: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
        keep_hot: bool = True,
    ) -> ServedPage:
        """One page as response bytes; raises `NotCachedError` if the area was never cached.

        Pagination guarantees are those of `cache.warm.read_page`.  `narrow` drops the
        records outside the reader's audience (named by `audience`) before the page is
        encoded, so a page may hold fewer than `limit` records; `keep_hot` False neither
        reads nor keeps a hot page (a page the caller will change).
        """
        state = repo.area_state(session.connection(), school_id, area)
        if state is None or state.as_of is None:
            raise NotCachedError(f"{area} is not cached yet")
        query: dict[str, Any] = {
            "fields": fields,
            "updated_since": updated_since,
            "cursor": cursor,
            "limit": limit,
            "audience": audience,
        }
        stale = is_stale(area, state.as_of, now)
        ref = self._ref(state.school_id, area, state.data_version, stale, query)
        hot_ok = keep_hot and self.hot is not None and hot_cacheable(area, fields)
        hot = self._hot_get(ref) if hot_ok else None
        if hot is not None:
            warm.touch_after_commit(session, state, now)
            return ServedPage(
                hot.body,
                self.namer.etag(ref.key),
                state.as_of,
                stale,
                ref.data_version,
                "hot",
                hot.record_count,
            )
        page = warm.read_page(
            session,
            self.keyring,
            blobs=self.blobs,
            namer=self.namer,
            school_id=school_id,
            area=area,
            now=now,
            fields=fields,
            updated_since=updated_since,
            cursor=cursor,
            limit=limit,
        )
        if narrow is not None:
            page = dataclasses.replace(page, records=narrow(page.records))
        body = encode_body(page)
        ref = self._ref(school_id, area, page.data_version, page.stale, query)
        count = len(page.records)
        if hot_ok:
            self._hot_put(ref, body, count)
        return ServedPage(
            body,
            self.namer.etag(ref.key),
            page.as_of,
            page.stale,
            page.data_version,
            "warm",
            count,
        )

    def area_states(self, session: Session, school_id: str, now: datetime) -> list[AreaView]:
        return [_view(state, now) for state in repo.school_areas(session.connection(), school_id)]

    def invalidate(self, school_id: str, area: str) -> int:
        """Drop the area's hot pages (they are unreachable anyway once data_version moves)."""
        for callback in self._local_invalidations:
            try:
                callback(school_id, area)
            except Exception:  # the pages below must go (and be announced) regardless
                log.exception("an in-process cache failed to drop an area")
        if self.hot is None:
            return 0
        try:
            return self.hot.invalidate_area(school_id, area)
        except redis.RedisError:
            log.warning("could not drop hot pages; they expire with their TTL")
            return 0

    def mark_requested(self, session: Session, school_id: str, area: str, now: datetime) -> None:
        """Record that a partner asked for the area, cached or not (the caching policy)."""
        get_area(area)
        # The naming secret is made on first use, by the key store's own connection: do it
        # before this write, which on SQLite holds the file's one write lock until commit.
        self.namer.prepare()
        conn = session.connection()
        repo.lock_area(conn, school_id, area, now)
        repo.update_area(conn, school_id, area, last_requested_at=now)

    def _ref(
        self, school_id: str, area: str, data_version: int, stale: bool, query: Mapping[str, Any]
    ) -> PageRef:
        return page_ref(
            self.namer,
            school_id=school_id,
            area=area,
            data_version=data_version,
            stale=stale,
            **query,
        )

    def _hot_get(self, ref: PageRef) -> HotPage | None:
        assert self.hot is not None
        try:
            return self.hot.fetch(ref)
        except redis.RedisError:
            log.warning("hot tier unavailable; serving from the warm tier")
            return None

    def _hot_put(self, ref: PageRef, body: bytes, record_count: int) -> None:
        assert self.hot is not None
        try:
            self.hot.put_page(ref, body, record_count)
        except redis.RedisError:
            log.warning("hot tier unavailable; page not kept")


def hot_cacheable(area: str, fields: frozenset[str] | None) -> bool:
    """Pages with photos are not kept hot: their bytes belong in the cold tier."""
    binary = warm.binary_field(get_area(area))
    return binary is None or (fields is not None and binary not in fields)


def _view(state: repo.AreaState, now: datetime) -> AreaView:
    as_of = state.as_of
    return AreaView(
        area=state.area,
        cached=as_of is not None,
        as_of=as_of,
        stale=as_of is None or is_stale(state.area, as_of, now),
        expires_at=None if as_of is None else expires_at(state.area, as_of),
        purge_after=state.purge_after,
        tier=state.tier,
        data_version=state.data_version,
        record_count=state.record_count,
        last_read_at=state.last_read_at,
        last_requested_at=state.last_requested_at,
        refresh_requested_at=state.refresh_requested_at,
    )
