"""No plaintext at rest in any tier (canary), and ciphertext moved between slots never opens."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, MetaData, select, update

from broker.clock import FrozenClock
from broker.db import session_scope
from cache import tasks
from cache.crypto import IntegrityError
from cache.keys import KeyRing
from cache.models import CacheTier, cached_areas, cached_records
from cache.naming import school_macs
from cache.service import CacheService
from tests.cache.conftest import OTHER_SCHOOL, SCHOOL, student, students, upload
from tests.conftest import T0


def read(
    engine: Engine, service: CacheService, area: str, school: str = SCHOOL, **query: Any
) -> bytes:
    params: dict[str, Any] = {"fields": None, "updated_since": None, "limit": 100, "cursor": None}
    params.update(query)
    with session_scope(engine) as session:
        page = service.read_page(
            session, school_id=school, area=area, now=T0 + timedelta(hours=1), **params
        )
    return bytes(page.body)


def database_bytes(engine: Engine, database_url: str) -> list[bytes]:
    """Every stored value of every table; for SQLite, the raw database and WAL files too."""
    chunks: list[bytes] = []
    if database_url.startswith("sqlite"):
        path = Path(engine.url.database or "")
        chunks += [p.read_bytes() for p in path.parent.glob(path.name + "*")]
    reflected = MetaData()
    reflected.reflect(engine)
    with engine.connect() as conn:
        for table in reflected.tables.values():
            for row in conn.execute(select(table)):
                for value in row:
                    chunks.append(value if isinstance(value, bytes) else str(value).encode())
    return chunks


def redis_bytes(client: redis.Redis) -> list[bytes]:
    """Every key name and DUMP of every key, plus the server's persistence files."""
    chunks: list[bytes] = []
    for key in client.scan_iter("*"):
        chunks += [key, client.dump(key) or b""]
    client.save()
    directory = Path(str(client.config_get("dir")["dir"]))
    chunks += [p.read_bytes() for p in directory.rglob("*") if p.is_file()]
    return chunks


def test_canary_markers_never_appear_at_rest(
    engine: Engine,
    database_url: str,
    service: CacheService,
    deps: tasks.CacheDeps,
    clock: FrozenClock,
    redis_client: redis.Redis,
    blob_dir: Path,
) -> None:
    marker = f"CANARY{uuid.uuid4().hex}"
    photo_marker = f"PHOTO{uuid.uuid4().hex}".encode()
    markers = [marker.encode(), photo_marker, base64.b64encode(photo_marker)]
    upload(engine, service, "students.basic", [student(1, surname=marker), *students(3, 2)])
    upload(engine, service, "staff.basic", [{"id": f"{marker}-staff", "forename": marker}])
    upload(
        engine,
        service,
        "students.photos",
        [{"id": "p1", "photo": base64.b64encode(photo_marker * 50).decode()}],
    )
    # Through every tier: warm (all), hot (pages read), cold (staff demoted, then photos).
    for area in ("students.basic", "staff.basic"):
        assert marker.encode() in read(engine, service, area)
    assert read(engine, service, "students.basic", updated_since=T0 - timedelta(days=1))
    assert (
        base64.b64encode(photo_marker).decode()[:20]
        in read(engine, service, "students.photos").decode()
    )
    with session_scope(engine) as session:
        session.connection().execute(
            update(cached_areas)
            .where(cached_areas.c.area != "staff.basic")
            .values(last_read_at=T0 + timedelta(days=30))
        )
    clock.set(T0 + timedelta(days=8))
    assert tasks.demote_idle(deps) == [(SCHOOL, "staff.basic")]

    stored = {
        "database": database_bytes(engine, database_url),
        "redis": redis_bytes(redis_client),
        "blobs": [p.read_bytes() for p in blob_dir.rglob("*") if p.is_file()],
    }
    assert len(stored["blobs"]) == 2  # the staff bundle and the photo
    assert any(key.startswith(b"mb:h:") for key in stored["redis"])
    for tier, chunks in stored.items():
        for chunk in chunks:
            for secret in markers:
                assert secret not in chunk, f"plaintext marker found in the {tier} tier"


def test_a_record_copied_onto_another_schools_slot_fails_to_open(
    engine: Engine, service: CacheService, keyring: KeyRing
) -> None:
    upload(engine, service, "students.basic", [student(1, surname="Alpha")])
    upload(engine, service, "students.basic", [student(1, surname="Beta")], school=OTHER_SCHOOL)
    mine = school_macs(keyring, SCHOOL).record_key("stu-00001")
    theirs = school_macs(keyring, OTHER_SCHOOL).record_key("stu-00001")
    with session_scope(engine) as session:
        conn = session.connection()
        stolen = conn.execute(
            select(cached_records.c.ciphertext).where(
                cached_records.c.school_id == SCHOOL, cached_records.c.record_key == mine
            )
        ).scalar_one()
        conn.execute(
            update(cached_records)
            .where(
                cached_records.c.school_id == OTHER_SCHOOL, cached_records.c.record_key == theirs
            )
            .values(ciphertext=stolen)
        )
    with pytest.raises(IntegrityError):
        read(engine, service, "students.basic", school=OTHER_SCHOOL)
    with pytest.raises(IntegrityError):
        read(
            engine,
            service,
            "students.basic",
            school=OTHER_SCHOOL,
            updated_since=T0 - timedelta(seconds=1),
        )
    assert b"Alpha" in read(engine, service, "students.basic")  # the source is untouched


def test_records_swapped_within_a_school_fail_to_open(
    engine: Engine, service: CacheService
) -> None:
    upload(engine, service, "students.basic", students(2))
    with session_scope(engine) as session:
        conn = session.connection()
        rows = conn.execute(select(cached_records.c.record_key, cached_records.c.ciphertext)).all()
        for (key, _), (_, other) in zip(rows, reversed(rows), strict=True):
            conn.execute(
                update(cached_records)
                .where(cached_records.c.record_key == key)
                .values(ciphertext=other)
            )
    with pytest.raises(IntegrityError):
        read(engine, service, "students.basic")


def test_a_cold_bundle_moved_to_another_area_fails_to_open(
    engine: Engine,
    service: CacheService,
    deps: tasks.CacheDeps,
    clock: FrozenClock,
) -> None:
    upload(engine, service, "students.basic", students(2))
    upload(engine, service, "staff.basic", [{"id": "t1", "forename": "Tess"}])
    clock.set(T0 + timedelta(days=8))
    assert len(tasks.demote_idle(deps) or []) == 2
    with session_scope(engine) as session:
        conn = session.connection()
        keys = dict(conn.execute(select(cached_areas.c.area, cached_areas.c.cold_blob_key)).all())
        conn.execute(
            update(cached_areas)
            .where(cached_areas.c.area == "staff.basic")
            .values(cold_blob_key=keys["students.basic"])
        )
    with pytest.raises(IntegrityError):
        read(engine, service, "staff.basic")
    with engine.connect() as conn:
        tiers = dict(conn.execute(select(cached_areas.c.area, cached_areas.c.tier)).all())
    assert CacheTier(tiers["staff.basic"]) is CacheTier.COLD  # nothing was restored
    data = orjson.loads(read(engine, service, "students.basic"))["data"]
    assert sorted(r["id"] for r in data) == ["stu-00000", "stu-00001"]
