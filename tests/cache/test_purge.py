"""Purge at validity + 30 days and crypto-shredding of closed schools, at their exact edges."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import redis
from sqlalchemy import Engine, func, select

from broker.clock import FrozenClock
from cache import tasks
from cache.blobs import BlobStore
from cache.crypto import open_sealed
from cache.key_store import SqlDataKeyStore
from cache.keys import KeyRing, KeyShreddedError, LocalKeyProvider
from cache.models import cached_areas, cached_records, data_keys
from cache.purge import format_report
from cache.service import CacheService
from cache.warm import record_slot
from tests.cache.conftest import OTHER_SCHOOL, SCHOOL, read, students, upload
from tests.conftest import T0

SECOND = timedelta(seconds=1)
BASIC_PURGE = T0 + timedelta(days=1 + 30)
PHOTOS_PURGE = T0 + timedelta(days=7 + 30)


@pytest.fixture
def blobs(blob_store: BlobStore) -> BlobStore:
    """This module's tests run on every cold-tier adapter (directory, S3)."""
    return blob_store


def cached(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {(r.school_id, r.area) for r in conn.execute(select(cached_areas))}


def record_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(cached_records)).scalar_one())


@pytest.fixture
def loaded(engine: Engine, service: CacheService) -> None:
    photo = base64.b64encode(b"jpeg bytes").decode()
    upload(engine, service, "students.basic", students(3))
    upload(engine, service, "students.photos", [{"id": "p1", "photo": photo}])
    upload(engine, service, "students.basic", students(2), school=OTHER_SCHOOL)
    read(engine, service, "students.basic")  # one hot page


@pytest.mark.usefixtures("loaded")
def test_purge_keeps_an_area_until_30_days_out_of_date_then_removes_it_everywhere(
    engine: Engine,
    deps: tasks.CacheDeps,
    clock: FrozenClock,
    blobs: BlobStore,
    redis_client: redis.Redis,
) -> None:
    clock.set(BASIC_PURGE - SECOND)
    report = tasks.purge_expired(deps)
    assert report is not None
    assert report.areas == ()
    assert len(cached(engine)) == 3
    assert list(redis_client.scan_iter("mb:h:*")) != []
    clock.set(BASIC_PURGE + SECOND)
    report = tasks.purge_expired(deps)
    assert report is not None
    assert {(a.school_id, a.area) for a in report.areas} == {
        (SCHOOL, "students.basic"),
        (OTHER_SCHOOL, "students.basic"),
    }
    assert (report.records, report.rows) == (5, 5)
    assert cached(engine) == {(SCHOOL, "students.photos")}
    assert record_rows(engine) == 1
    assert list(redis_client.scan_iter("mb:[hi]:*")) == []  # hot pages and their index went
    assert len(list(blobs.keys())) == 1  # the photo stays until its own edge
    clock.set(PHOTOS_PURGE + SECOND)
    tasks.purge_expired(deps)
    assert cached(engine) == set()
    assert list(blobs.keys()) == []


@pytest.mark.usefixtures("loaded")
def test_a_dry_run_lists_without_removing(engine: Engine, deps: tasks.CacheDeps) -> None:
    report = tasks.run_purge(deps, now=PHOTOS_PURGE + SECOND, dry_run=True)
    shown = format_report(report)
    assert shown["dry_run"] is True
    assert (shown["areas"], shown["records"], shown["rows"]) == (3, 6, 6)
    assert shown["as_of"] == "2026-12-30T09:00:01Z"
    assert {(i["area"], i["purge_after"]) for i in shown["items"]} == {
        ("students.basic", "2026-12-24T09:00:00Z"),
        ("students.photos", "2026-12-30T09:00:00Z"),
    }
    assert len(cached(engine)) == 3
    assert record_rows(engine) == 6


@pytest.mark.usefixtures("loaded")
def test_a_refresh_before_the_edge_keeps_the_area(
    engine: Engine, service: CacheService, deps: tasks.CacheDeps
) -> None:
    upload(engine, service, "students.basic", students(3), at=T0 + timedelta(days=10))
    report = tasks.run_purge(deps, now=BASIC_PURGE + SECOND, dry_run=False)
    assert {(a.school_id, a.area) for a in report.areas} == {(OTHER_SCHOOL, "students.basic")}
    assert len(read(engine, service, "students.basic")) == 3


@pytest.mark.usefixtures("loaded")
def test_shred_at_day_31_then_nothing_decrypts_and_rows_are_gone(
    engine: Engine,
    service: CacheService,
    deps: tasks.CacheDeps,
    clock: FrozenClock,
    blobs: BlobStore,
    key_store: SqlDataKeyStore,
    provider: LocalKeyProvider,
) -> None:
    closed_at = T0 + timedelta(days=2)
    with engine.connect() as conn:
        row = conn.execute(
            select(cached_records).where(cached_records.c.school_id == SCHOOL).limit(1)
        ).one()
    closed = [(SCHOOL, closed_at)]
    clock.set(closed_at + timedelta(days=31) - SECOND)
    assert tasks.shred_closed_schools(deps, closed) == []
    assert len(read(engine, service, "students.basic")) == 3
    clock.set(closed_at + timedelta(days=31))
    assert tasks.shred_closed_schools(deps, closed) == [SCHOOL]
    assert key_store.is_shredded(SCHOOL)
    with pytest.raises(KeyShreddedError):  # a copy kept elsewhere (a backup) is dead too
        open_sealed(
            deps.keyring,
            record_slot(SCHOOL, row.area, row.record_key, row.seq),
            bytes(row.ciphertext),
        )
    another_process = KeyRing(provider, SqlDataKeyStore(engine))
    with pytest.raises(KeyShreddedError):
        another_process.decryption_key(SCHOOL, 1)
    assert cached(engine) == {(OTHER_SCHOOL, "students.basic")}
    with engine.connect() as conn:
        assert conn.execute(select(data_keys.c.school_id)).scalars().all() != []
        assert SCHOOL not in conn.execute(select(data_keys.c.school_id)).scalars().all()
        assert (
            conn.execute(
                select(func.count())
                .select_from(cached_records)
                .where(cached_records.c.school_id == SCHOOL)
            ).scalar_one()
            == 0
        )
    assert list(blobs.keys()) == []
    assert len(read(engine, service, "students.basic", school=OTHER_SCHOOL)) == 2
    clock.set(closed_at + timedelta(days=32))
    assert tasks.shred_closed_schools(deps, closed) == []  # done: nothing more to do


def test_beat_lock_is_released_when_the_job_fails(
    deps: tasks.CacheDeps, redis_client: redis.Redis
) -> None:
    def failing_job() -> None:
        with tasks.beat_lock(redis_client, "cache.test", slot_seconds=3600, now=T0) as acquired:
            assert acquired
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_job()
    with tasks.beat_lock(redis_client, "cache.test", slot_seconds=3600, now=T0) as again:
        assert again
    with tasks.beat_lock(redis_client, "cache.test", slot_seconds=3600, now=T0) as third:
        assert not third
    key = tasks.lock_key("cache.test", 3600, T0)
    assert 0 < redis_client.pttl(key) <= 3600 * 1000
