"""The hot tier and the service's read path: hot -> warm -> cold."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis
from sqlalchemy import Engine

from broker.db import session_scope
from cache.crypto import IntegrityError
from cache.errors import NotCachedError
from cache.hot import AsyncHotCache, HotCache, PageRef, page_ref
from cache.keys import InMemoryDataKeyStore, KeyRing, LocalKeyProvider
from cache.naming import Namer
from cache.service import CacheService, ServedPage
from tests.cache.conftest import SCHOOL, student, students, upload
from tests.conftest import T0

AREA = "students.basic"
LATER = T0 + timedelta(hours=1)


def read(engine: Engine, service: CacheService, now: datetime = LATER, **query: Any) -> ServedPage:
    params: dict[str, Any] = {"fields": None, "updated_since": None, "limit": 100, "cursor": None}
    params.update(query)
    with session_scope(engine) as session:
        return service.read_page(session, school_id=SCHOOL, area=AREA, now=now, **params)


@pytest.fixture
def mem_ring(provider: LocalKeyProvider) -> KeyRing:
    """Keys in memory: the hot tier alone needs no database."""
    return KeyRing(provider, InMemoryDataKeyStore())


@pytest.fixture
def mem_namer(mem_ring: KeyRing) -> Namer:
    return Namer(mem_ring)


@pytest.fixture
def mem_hot(redis_client: redis.Redis, mem_ring: KeyRing, mem_namer: Namer) -> HotCache:
    return HotCache(redis_client, mem_ring, mem_namer, ttl_seconds=900)


def first_page_ref(namer: Namer) -> PageRef:
    return page_ref(
        namer,
        school_id=SCHOOL,
        area=AREA,
        data_version=7,
        stale=False,
        fields=None,
        updated_since=None,
        cursor=None,
        limit=100,
    )


def test_hot_page_round_trip_and_ttl(
    mem_hot: HotCache, mem_namer: Namer, redis_client: redis.Redis
) -> None:
    ref = first_page_ref(mem_namer)
    assert mem_hot.get_page(ref) is None
    assert mem_hot.put_page(ref, b'{"data": []}')
    assert mem_hot.get_page(ref) == b'{"data": []}'
    assert 0 < redis_client.ttl(ref.key) <= 900
    assert mem_hot.invalidate_area(SCHOOL, AREA) == 1
    assert mem_hot.get_page(ref) is None
    assert redis_client.dbsize() == 0


def test_a_hot_page_moved_to_another_key_fails_loudly(
    mem_hot: HotCache, mem_namer: Namer, redis_client: redis.Redis
) -> None:
    common: dict[str, Any] = {"school_id": SCHOOL, "area": AREA, "stale": False, "fields": None}
    common.update(updated_since=None, cursor=None, limit=100)
    one = page_ref(mem_namer, data_version=1, **common)
    two = page_ref(mem_namer, data_version=2, **common)
    mem_hot.put_page(one, b"secret page")
    redis_client.set(two.key, redis_client.get(one.key) or b"", ex=60)
    with pytest.raises(IntegrityError):
        mem_hot.get_page(two)


def test_oversized_pages_are_not_kept(
    mem_ring: KeyRing, mem_namer: Namer, redis_client: redis.Redis
) -> None:
    small = HotCache(redis_client, mem_ring, mem_namer, ttl_seconds=60, max_page_bytes=10)
    ref = page_ref(
        mem_namer,
        school_id=SCHOOL,
        area=AREA,
        data_version=1,
        stale=False,
        fields=None,
        updated_since=None,
        cursor=None,
        limit=1,
    )
    assert not small.put_page(ref, b"x" * 11)
    assert redis_client.dbsize() == 0


async def test_async_hot_cache_reads_what_the_sync_one_wrote(
    mem_hot: HotCache, mem_ring: KeyRing, mem_namer: Namer, redis_url: str
) -> None:
    client = aredis.Redis.from_url(redis_url)
    try:
        async_hot = AsyncHotCache(client, mem_ring, mem_namer, ttl_seconds=900)
        ref = page_ref(
            mem_namer,
            school_id=SCHOOL,
            area=AREA,
            data_version=3,
            stale=True,
            fields=None,
            updated_since=None,
            cursor=None,
            limit=100,
        )
        mem_hot.put_page(ref, b"body")
        assert await async_hot.get_page(ref) == b"body"
        assert await async_hot.invalidate_area(SCHOOL, AREA) == 1
        assert await async_hot.put_page(ref, b"again")
        assert mem_hot.get_page(ref) == b"again"
    finally:
        await client.aclose()


def test_service_serves_warm_then_hot_with_the_same_bytes(
    engine: Engine, service: CacheService
) -> None:
    upload(engine, service, AREA, students(3))
    first = read(engine, service)
    second = read(engine, service)
    assert (first.source, second.source) == ("warm", "hot")
    assert second.body == first.body
    assert second.etag == first.etag
    body = orjson.loads(first.body)
    assert body["meta"] == {"as_of": "2026-11-23T09:00:00Z", "stale": False, "next_cursor": None}
    assert sorted(r["id"] for r in body["data"]) == ["stu-00000", "stu-00001", "stu-00002"]


def test_a_new_upload_changes_the_page_and_the_etag(engine: Engine, service: CacheService) -> None:
    upload(engine, service, AREA, students(3))
    before = read(engine, service)
    upload(engine, service, AREA, [student(0, surname="Renamed")], at=T0 + timedelta(minutes=30))
    after = read(engine, service)
    assert after.source == "warm"
    assert after.etag != before.etag
    assert b"Renamed" in after.body
    assert after.data_version == before.data_version + 1


def test_a_page_cached_fresh_is_not_served_once_stale(
    engine: Engine, service: CacheService
) -> None:
    upload(engine, service, AREA, students(1))
    assert not read(engine, service).stale
    stale = read(engine, service, now=T0 + timedelta(hours=25))
    assert stale.source == "warm"
    assert stale.stale
    assert orjson.loads(stale.body)["meta"]["stale"] is True


def test_every_hot_key_has_a_ttl_and_an_opaque_name(
    engine: Engine, service: CacheService, redis_client: redis.Redis
) -> None:
    upload(engine, service, AREA, students(30))
    page = read(engine, service, limit=10)
    read(engine, service, limit=10, cursor=orjson.loads(page.body)["meta"]["next_cursor"])
    read(engine, service, fields=frozenset({"surname"}))
    read(engine, service, updated_since=T0 - timedelta(days=1))
    keys = list(redis_client.scan_iter("*"))
    assert len(keys) >= 5  # four pages and their area index
    for key in keys:
        assert redis_client.ttl(key) > 0, key
        name = key.decode()
        for secret in (SCHOOL, "sch_", AREA, "students", "stu-", "A0000"):
            assert secret not in name


def test_not_cached_then_mark_requested(engine: Engine, service: CacheService) -> None:
    with pytest.raises(NotCachedError):
        read(engine, service)
    with session_scope(engine) as session:
        service.mark_requested(session, SCHOOL, AREA, T0)
    with pytest.raises(NotCachedError):
        read(engine, service)
    with session_scope(engine) as session:
        (view,) = service.area_states(session, SCHOOL, T0)
    assert (view.area, view.cached, view.last_requested_at) == (AREA, False, T0)


def test_area_states_report_freshness(engine: Engine, service: CacheService) -> None:
    upload(engine, service, AREA, students(4))
    upload(engine, service, "students.photos", [{"id": "p1", "photo_available": False}])
    with session_scope(engine) as session:
        views = {v.area: v for v in service.area_states(session, SCHOOL, T0 + timedelta(days=2))}
    assert views[AREA].stale
    assert views[AREA].record_count == 4
    assert not views["students.photos"].stale
    assert views["students.photos"].expires_at == T0 + timedelta(days=7)
    assert views[AREA].purge_after == T0 + timedelta(days=31)


def test_a_read_records_its_time_after_commit(engine: Engine, service: CacheService) -> None:
    upload(engine, service, AREA, students(1))
    read(engine, service, now=LATER)
    read(engine, service, now=LATER + timedelta(minutes=5))  # within the touch interval
    with session_scope(engine) as session:
        (view,) = service.area_states(session, SCHOOL, LATER)
    assert view.last_read_at == LATER
    assert view.last_requested_at == LATER


def test_mark_requested_then_read_in_one_unit_of_work(
    engine: Engine, keyring: KeyRing, blobs: Any, hot: HotCache
) -> None:
    """The partner-read path: a write, then a read, in one session, with a brand-new namer."""
    upload(engine, CacheService(keyring=keyring, blobs=blobs, hot=hot), AREA, students(2))
    service = CacheService(keyring=keyring, blobs=blobs, hot=hot)  # derives its keys afresh
    with session_scope(engine) as session:
        service.mark_requested(session, SCHOOL, AREA, LATER)
        page = service.read_page(
            session,
            school_id=SCHOOL,
            area=AREA,
            fields=None,
            updated_since=None,
            limit=10,
            cursor=None,
            now=LATER,
        )
    assert len(orjson.loads(page.body)["data"]) == 2


def test_a_hot_page_carries_its_record_count(mem_hot: HotCache, mem_namer: Namer) -> None:
    ref = first_page_ref(mem_namer)
    assert mem_hot.put_page(ref, b'{"data": [1, 2, 3]}', 3)
    page = mem_hot.fetch(ref)
    assert page is not None
    assert page.record_count == 3
    assert page.body == b'{"data": [1, 2, 3]}'
