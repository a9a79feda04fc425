"""The cold tier: idle areas as one sealed bundle each, and photos, in the blob store.

Demoting moves an area's rows (already sealed per record) into one bundle, sealed again as a
whole so that record keys, sequence numbers and times are not readable either; promoting
restores the rows unchanged.  Every blob of an area lives under one opaque prefix, so a
purge or shred deletes the area's blobs, orphans included, without reading anything.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from datetime import datetime
from typing import Any, Final

import orjson
from sqlalchemy.orm import Session

from cache import repository as repo
from cache.blobs import BlobStore
from cache.crypto import Slot, SlotKind, open_sealed, seal
from cache.errors import ColdBlobMissingError, NotCachedError
from cache.keys import KeyRing
from cache.models import CacheTier
from cache.naming import Namer, from_instant_key, instant_key
from cache.unit import after_commit

BUNDLE_FORMAT: Final = 1
BUNDLE_RECORD_ID: Final = "area-bundle"


def bundle_slot(state: repo.AreaState) -> Slot:
    return Slot(state.school_id, state.area, BUNDLE_RECORD_ID, state.data_version, SlotKind.BLOB)


def photo_slot(school_id: str, area: str, record_key: str, seq: int) -> Slot:
    return Slot(school_id, area, record_key, seq, SlotKind.BLOB)


def new_blob_key(namer: Namer, school_id: str, area: str, kind: str) -> str:
    """A fresh opaque key under the area's prefix; random, so rewrites never collide."""
    return f"{namer.blob_prefix(school_id, area)}{kind}-{secrets.token_hex(12)}"


def delete_blob_after_commit(session: Session, blobs: BlobStore, key: str | None) -> None:
    if key is not None:
        after_commit(session, lambda: blobs.delete(key))


def _encode_row(row: repo.AnyRow) -> dict[str, Any]:
    return {
        "k": row.record_key,
        "q": row.seq,
        "t": instant_key(row.changed_at),
        "d": row.deleted,
        "a": instant_key(row.as_of),
        "h": base64.b64encode(row.content_hash).decode(),
        "c": base64.b64encode(row.ciphertext).decode(),
        "b": row.blob_key,
    }


def _decode_row(state: repo.AreaState, item: dict[str, Any]) -> repo.RecordRow:
    return (
        state.school_id,
        state.area,
        item["k"],
        item["q"],
        from_instant_key(item["t"]),
        item["d"],
        from_instant_key(item["a"]),
        base64.b64decode(item["h"]),
        base64.b64decode(item["c"]),
        item["b"],
    )


def demote_area(
    session: Session,
    keyring: KeyRing,
    blobs: BlobStore,
    namer: Namer,
    *,
    school_id: str,
    area: str,
    idle_before: datetime,
    now: datetime,
) -> bool:
    """Move a warm area not read since `idle_before` to the cold tier; False if it was not."""
    namer.prepare()
    conn = session.connection()
    state = repo.lock_existing_area(conn, school_id, area)
    if state is None or state.tier is CacheTier.COLD or not state.cached:
        return False
    if (state.last_read_at or state.created_at) >= idle_before:
        return False  # read since the task chose it
    rows = repo.all_records(conn, school_id, area)
    bundle = orjson.dumps({"v": BUNDLE_FORMAT, "rows": [_encode_row(row) for row in rows]})
    key = new_blob_key(namer, school_id, area, "bundle")
    blobs.put(key, seal(keyring, bundle_slot(state), bundle))
    repo.delete_area_records(conn, school_id, area)
    repo.update_area(conn, school_id, area, tier=CacheTier.COLD, cold_blob_key=key, updated_at=now)
    return True


def promote_area(
    session: Session,
    keyring: KeyRing,
    blobs: BlobStore,
    *,
    school_id: str,
    area: str,
    now: datetime,
) -> repo.AreaState:
    """Bring a cold area back to the warm tier (a no-op for a warm one); return its state."""
    conn = session.connection()
    state = repo.lock_existing_area(conn, school_id, area)
    if state is None or not state.cached:
        raise NotCachedError(f"{area} is not cached")
    if state.tier is CacheTier.WARM or state.cold_blob_key is None:
        return state
    sealed = blobs.get(state.cold_blob_key)
    if sealed is None:
        raise ColdBlobMissingError("the cold bundle of an area is missing from the blob store")
    bundle = orjson.loads(open_sealed(keyring, bundle_slot(state), sealed))
    repo.insert_records(conn, [_decode_row(state, item) for item in bundle["rows"]])
    repo.update_area(conn, school_id, area, tier=CacheTier.WARM, cold_blob_key=None, updated_at=now)
    delete_blob_after_commit(session, blobs, state.cold_blob_key)
    return dataclasses.replace(state, tier=CacheTier.WARM, cold_blob_key=None)
