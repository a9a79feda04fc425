"""Photos travel in packs: a few blobs per upload, every photo readable, and a replaced or
deleted pupil's photo gone from the store with the batch that replaces or deletes it."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, select, update

from broker.db import session_scope
from cache.blobs import BlobStore
from cache.models import cached_records
from cache.naming import Namer
from cache.photo_packs import PACK_PHOTOS, PackWriter, PhotoRef
from cache.service import CacheService
from tests.cache.conftest import SCHOOL, upload
from tests.conftest import T0


class RefusedDeletionError(Exception):
    pass


PHOTOS = "students.photos"
H = timedelta(hours=1)


@pytest.fixture
def blobs(blob_store: BlobStore) -> BlobStore:
    """On every cold-tier adapter (directory, S3)."""
    return blob_store


def jpeg(n: int, version: int = 1) -> str:
    raw = b"\xff\xd8\xff\xe0" + f"pupil {n:05d} photo v{version} ".encode() * 40
    return base64.b64encode(raw).decode()


def photos(count: int, *, start: int = 1, version: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": f"stu-{n:05d}", "photo": jpeg(n, version), "photo_available": True}
        for n in range(start, start + count)
    ]


def read_photos(service: CacheService, engine: Engine) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    cursor = None
    while True:
        with session_scope(engine) as session:
            page = service.read_page(
                session,
                school_id=SCHOOL,
                area=PHOTOS,
                now=T0 + 10 * H,
                fields=None,
                updated_since=None,
                limit=100,
                cursor=cursor,
            )
        body = orjson.loads(page.body)
        out.update({r["id"]: r.get("photo") for r in body["data"]})
        cursor = body["meta"]["next_cursor"]
        if not cursor:
            return out


def references(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(cached_records.c.record_key, cached_records.c.blob_key).where(
                cached_records.c.area == PHOTOS, cached_records.c.blob_key.is_not(None)
            )
        )
        return {str(k): str(v) for k, v in rows}


def rows_but_references(engine: Engine) -> dict[str, tuple[Any, ...]]:
    """Every column of each photo row but its photo's reference, by record key."""
    columns = [c for c in cached_records.c if c.name != "blob_key"]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).where(cached_records.c.area == PHOTOS))
        return {str(row.record_key): tuple(row) for row in rows}


def sealed_bytes(blobs: BlobStore, reference: str) -> bytes:
    ref = PhotoRef.parse(reference)
    blob = blobs.get(ref.key)
    assert blob is not None
    cut = ref.cut(blob)
    assert cut is not None
    return cut


def everything_stored(blobs: BlobStore) -> list[bytes]:
    keys = list(blobs.keys())
    return [blob for key in keys if (blob := blobs.get(key)) is not None]


def test_an_upload_s_photos_are_a_few_packs_and_all_read_back(
    service: CacheService, engine: Engine, blobs: BlobStore
) -> None:
    count = 2 * PACK_PHOTOS + 2
    upload(engine, service, PHOTOS, photos(count))
    assert len(list(blobs.keys())) == 3  # 64 + 64 + 2
    assert read_photos(service, engine) == {r["id"]: r["photo"] for r in photos(count)}
    for blob in everything_stored(blobs):
        assert b"pupil 00001" not in blob  # sealed, every one


def test_a_deleted_pupil_s_photo_leaves_the_store_with_the_deletion(
    service: CacheService, engine: Engine, blobs: BlobStore
) -> None:
    upload(engine, service, PHOTOS, photos(10))
    before = references(engine)
    (pack,) = blobs.keys()
    doomed = {key: sealed_bytes(blobs, ref) for key, ref in before.items()}
    upload(engine, service, PHOTOS, [], mode="delta", deleted=("stu-00003",), at=T0 + H)
    after = references(engine)
    assert len(after) == 9
    (repacked,) = blobs.keys()
    assert repacked != pack  # the old pack went once the deletion committed
    gone = set(before) - set(after)
    assert len(gone) == 1
    stored = everything_stored(blobs)
    assert not any(doomed[key] in blob for key in gone for blob in stored)
    expected = {r["id"]: r["photo"] for r in photos(10) if r["id"] != "stu-00003"}
    assert {k: v for k, v in read_photos(service, engine).items() if v} == expected


def test_a_replaced_photo_is_repacked_and_the_others_move_with_it(
    service: CacheService, engine: Engine, blobs: BlobStore
) -> None:
    upload(engine, service, PHOTOS, photos(PACK_PHOTOS + 5))
    assert len(list(blobs.keys())) == 2
    old = references(engine)
    old_rows = rows_but_references(engine)
    changed = photos(1, start=2, version=2)
    everyone = [changed[0] if r["id"] == "stu-00002" else r for r in photos(PACK_PHOTOS + 5)]
    upload(engine, service, PHOTOS, everyone, at=T0 + H)  # a full upload: one photo differs
    new = references(engine)
    # The first pack held the replaced photo: its 63 others moved to a new pack with the
    # new photo; the second pack was not touched.
    assert len(list(blobs.keys())) == 2
    untouched = [
        key
        for key in old
        if PhotoRef.parse(old[key]).key in {PhotoRef.parse(ref).key for ref in new.values()}
    ]
    assert len(untouched) == 5
    # A moved photo's row changed its reference only; the replaced one's row is new.
    new_rows = rows_but_references(engine)
    rewritten = {key for key in old_rows if new_rows[key] != old_rows[key]}
    assert len(rewritten) == 1
    assert {key for key in old if old[key] != new[key]} == set(old) - set(untouched)
    photos_now = read_photos(service, engine)
    assert photos_now["stu-00002"] == changed[0]["photo"]
    assert photos_now == {r["id"]: r["photo"] for r in everyone}


def test_a_refused_mass_deletion_stores_no_photo(
    service: CacheService, engine: Engine, blobs: BlobStore
) -> None:
    upload(engine, service, PHOTOS, photos(20))
    (pack,) = blobs.keys()

    def refuse(live: int, deleting: int) -> None:
        raise RefusedDeletionError(f"{deleting} of {live}")

    with pytest.raises(RefusedDeletionError):
        upload(engine, service, PHOTOS, photos(2, start=100), at=T0 + H, deletion_guard=refuse)
    assert list(blobs.keys()) == [pack]


def test_a_photo_stored_whole_before_packs_still_reads_and_is_deleted_with_its_pupil(
    service: CacheService, engine: Engine, blobs: BlobStore
) -> None:
    """References written before packs name a whole blob: they read, and go when stale."""
    upload(engine, service, PHOTOS, photos(3))
    refs = references(engine)
    record_key, reference = sorted(refs.items())[0]
    ref = PhotoRef.parse(reference)
    whole = f"{ref.key}-whole"
    blobs.put(whole, sealed_bytes(blobs, reference))
    with session_scope(engine) as session:
        session.execute(
            update(cached_records)
            .where(cached_records.c.record_key == record_key)
            .values(blob_key=whole)
        )
    assert read_photos(service, engine) == {r["id"]: r["photo"] for r in photos(3)}
    upload(engine, service, PHOTOS, [], at=T0 + H)  # every pupil left
    assert list(blobs.keys()) == []  # the whole blob and the pack
    assert references(engine) == {}


def test_packs_wait_for_the_guard_then_are_written_as_they_fill(
    blobs: BlobStore, namer: Namer
) -> None:
    """Planning holds the upload's photos; past the guard a full pack is written at once,
    so repacking a large area holds one pack in memory, not all of its photos."""
    packs = PackWriter(blobs, namer, SCHOOL, PHOTOS)
    for n in range(PACK_PHOTOS + 1):
        packs.add(f"sealed {n}".encode())
    assert list(blobs.keys()) == []  # two packs, in memory until the guard has passed
    packs.writing()
    assert len(list(blobs.keys())) == 1  # the full one; the open one waits for more
    for n in range(2 * PACK_PHOTOS):
        packs.add(f"moved {n}".encode())
    assert len(list(blobs.keys())) == 3
    packs.flush()
    assert len(list(blobs.keys())) == 4
