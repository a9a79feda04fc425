"""The cold tier: demotion of idle areas, promotion on read or upload, photos as blobs."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from broker.clock import FrozenClock
from broker.db import session_scope
from cache import tasks
from cache.blobs import BlobStore
from cache.models import CacheTier, cached_areas, cached_records
from cache.service import CacheService
from tests.cache.conftest import SCHOOL, student, students
from tests.conftest import T0

AREA = "students.basic"
PHOTOS = "students.photos"


def upload(
    engine: Engine,
    service: CacheService,
    records: list[dict[str, Any]],
    *,
    area: str = AREA,
    at: Any = T0,
    mode: Any = "full",
) -> None:
    with session_scope(engine) as session:
        service.apply_batch(
            session,
            school_id=SCHOOL,
            area=area,
            mode=mode,
            records=records,
            deleted=[],
            extracted_at=at,
            now=at,
        )


@pytest.fixture
def blobs(blob_store: BlobStore) -> BlobStore:
    """This module's tests run on every cold-tier adapter (directory, S3)."""
    return blob_store


def read_all(engine: Engine, service: CacheService, area: str = AREA, **query: Any) -> Any:
    params: dict[str, Any] = {"fields": None, "updated_since": None, "limit": 100, "cursor": None}
    params.update(query)
    with session_scope(engine) as session:
        page = service.read_page(
            session, school_id=SCHOOL, area=area, now=T0 + timedelta(hours=1), **params
        )
    return orjson.loads(page.body)["data"]


def tier_and_rows(engine: Engine, area: str = AREA) -> tuple[CacheTier, int]:
    with engine.connect() as conn:
        tier = conn.execute(select(cached_areas.c.tier).where(cached_areas.c.area == area))
        rows = conn.execute(
            select(func.count()).select_from(cached_records).where(cached_records.c.area == area)
        )
        return CacheTier(tier.scalar_one()), rows.scalar_one()


def test_idle_areas_are_demoted_and_promoted_on_read(
    engine: Engine,
    service: CacheService,
    deps: tasks.CacheDeps,
    clock: FrozenClock,
    blobs: BlobStore,
) -> None:
    upload(engine, service, students(6))
    upload(engine, service, [student(2, surname="Changed")], mode="delta", at=T0)
    upload(engine, service, students(5), at=T0)  # full: stu-00005 becomes a tombstone
    before = read_all(engine, service)
    deltas_before = read_all(engine, service, updated_since=T0 - timedelta(days=1))
    last_read = T0 + timedelta(hours=1)
    clock.set(last_read + timedelta(days=7) - timedelta(seconds=1))
    assert tasks.demote_idle(deps) == []  # not idle long enough
    clock.set(last_read + timedelta(days=7, seconds=1))
    assert tasks.demote_idle(deps) == [(SCHOOL, AREA)]
    assert tier_and_rows(engine) == (CacheTier.COLD, 0)
    assert len(list(blobs.keys())) == 1
    service.invalidate(SCHOOL, AREA)  # force the read through to the tiers below
    assert read_all(engine, service) == before
    assert tier_and_rows(engine) == (CacheTier.WARM, 6)
    assert list(blobs.keys()) == []  # the bundle went once the promotion committed
    assert read_all(engine, service, updated_since=T0 - timedelta(days=1)) == deltas_before


def test_the_demotion_lock_is_per_slot(
    engine: Engine, service: CacheService, deps: tasks.CacheDeps, clock: FrozenClock
) -> None:
    upload(engine, service, students(2))
    clock.set(T0 + timedelta(days=8))
    assert tasks.demote_idle(deps) == [(SCHOOL, AREA)]
    assert tasks.demote_idle(deps) is None  # same slot: another beat already ran it


def test_an_upload_to_a_cold_area_promotes_it_first(
    engine: Engine, service: CacheService, deps: tasks.CacheDeps, clock: FrozenClock
) -> None:
    upload(engine, service, students(3))
    clock.set(T0 + timedelta(days=8))
    tasks.demote_idle(deps)
    later = T0 + timedelta(days=8)
    upload(engine, service, [student(9)], mode="delta", at=later)
    assert tier_and_rows(engine) == (CacheTier.WARM, 4)
    assert sorted(r["id"] for r in read_all(engine, service)) == [
        "stu-00000",
        "stu-00001",
        "stu-00002",
        "stu-00009",
    ]


def test_photos_live_in_the_blob_store_and_come_back(
    engine: Engine, service: CacheService, blobs: BlobStore
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20
    photo = base64.b64encode(jpeg).decode()
    upload(
        engine,
        service,
        [
            {"id": "stu-1", "photo": photo, "photo_available": True},
            {"id": "stu-2", "photo": None, "photo_available": False},
        ],
        area=PHOTOS,
    )
    with engine.connect() as conn:
        sizes = conn.execute(
            select(func.max(func.length(cached_records.c.ciphertext))).where(
                cached_records.c.area == PHOTOS
            )
        ).scalar_one()
    assert sizes < 200  # the warm row holds no photo bytes
    (key,) = blobs.keys()
    stored = blobs.get(key)
    assert stored is not None
    assert jpeg not in stored
    records = {r["id"]: r for r in read_all(engine, service, area=PHOTOS)}
    assert records["stu-1"]["photo"] == photo
    assert records["stu-2"] == {"id": "stu-2", "photo": None, "photo_available": False}
    light = read_all(engine, service, area=PHOTOS, fields=frozenset({"photo_available"}))
    assert all("photo" not in r for r in light)


def test_a_replaced_photo_drops_the_old_blob(
    engine: Engine, service: CacheService, blobs: BlobStore
) -> None:
    first = base64.b64encode(b"first photo").decode()
    second = base64.b64encode(b"second photo").decode()
    upload(engine, service, [{"id": "s1", "photo": first}], area=PHOTOS)
    (old_key,) = blobs.keys()
    upload(
        engine, service, [{"id": "s1", "photo": second}], area=PHOTOS, at=T0 + timedelta(hours=1)
    )
    (new_key,) = blobs.keys()
    assert new_key != old_key
    assert read_all(engine, service, area=PHOTOS)[0]["photo"] == second
