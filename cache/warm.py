"""The warm tier: apply uploaded batches to an area and read it back a page at a time.

Each record is sealed for its slot (school, area, record key, seq); its id is stored only
inside the ciphertext and as a keyed digest, the record key.  Every change gets the next
`seq` of its area, and unchanged records (same keyed content digest) keep theirs, so
`updated_since` returns only what really changed.  Deletions become tombstones.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cache import photo_packs
from cache import repository as repo
from cache.blobs import BlobStore
from cache.cold import photo_slot, promote_area
from cache.crypto import Slot, SlotKind, SlotSealer, open_json, open_sealed
from cache.cursors import Position, decode_cursor, encode_cursor
from cache.errors import (
    ColdBlobMissingError,
    InvalidBatchError,
    InvalidCursorError,
    NotCachedError,
    StaleUploadError,
    UnknownFieldError,
)
from cache.freshness import OUT_OF_DATE_RETENTION, is_stale, purge_after
from cache.keys import KeyRing
from cache.models import CacheTier
from cache.naming import Namer, SchoolMacs, school_macs
from cache.photo_packs import PackWriter, PhotoReader
from cache.unit import after_commit
from consent.areas import Area, FieldType, get_area

log = logging.getLogger(__name__)
# Called with (live records, records to tombstone); raises to refuse the upload.
DeletionGuard = Callable[[int, int], None]
Mode = Literal["full", "delta"]
MAX_LIMIT: Final = 1000
# Reads record their time at most this often per area: enough for demotion (days), and
# not a write per request.
TOUCH_INTERVAL_SECONDS: Final = 3600


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int  # records written (new or changed)
    deleted: int  # live records turned into tombstones
    data_version: int
    unchanged: int = 0  # records re-sent with identical content


@dataclass(frozen=True, slots=True)
class Page:
    records: list[dict[str, Any]]
    next_cursor: str | None
    as_of: datetime
    stale: bool
    data_version: int


def record_slot(school_id: str, area: str, record_key: str, seq: int) -> Slot:
    return Slot(school_id, area, record_key, seq, SlotKind.RECORD)


@functools.cache  # areas are the catalogue's constants; asked on every partner read
def binary_field(area: Area) -> str | None:
    """The area's one binary field (photos), whose bytes live in the blob store."""
    names = [spec.name for spec in area.fields if spec.type is FieldType.BINARY]
    if len(names) > 1:
        raise NotImplementedError(f"{area.name}: at most one binary field per area")
    return names[0] if names else None


# --------------------------------------------------------------------------- writing


@dataclass
class _Plan:
    """The rows one batch writes, built in memory before one bulk statement per kind."""

    seq: int
    inserts: list[repo.RecordRow] = field(default_factory=list)
    updates: list[repo.RecordRow] = field(default_factory=list)
    trimmed: list[str] = field(default_factory=list)
    stale_blobs: list[str] = field(default_factory=list)
    unchanged: int = 0
    revived: int = 0  # rows that became live (new, or a tombstone brought back)
    tombstoned: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(frozen=True, slots=True)
class _Batch:
    """What every row of one batch shares."""

    keyring: KeyRing
    records: SlotSealer  # the batch's records and tombstones
    photos: SlotSealer | None  # its photos, in an area with a binary field
    packs: PackWriter  # the batch's photos, written just before it commits
    namer: Namer
    macs: SchoolMacs
    school_id: str
    area: Area
    extracted_at: datetime
    now: datetime

    def row(
        self,
        record_key: str,
        seq: int,
        *,
        deleted: bool,
        content_hash: bytes,
        ciphertext: bytes,
        blob_key: str | None = None,
    ) -> repo.RecordRow:
        # In repo.RECORD_COLUMNS order: built for every record an upload changes.
        return (
            self.school_id,
            self.area.name,
            record_key,
            seq,
            self.now,
            deleted,
            self.extracted_at,
            content_hash,
            ciphertext,
            blob_key,
        )


def apply_batch(
    session: Session,
    keyring: KeyRing,
    *,
    blobs: BlobStore,
    namer: Namer,
    school_id: str,
    area: str,
    mode: Mode,
    records: Sequence[Mapping[str, Any]],
    deleted: Sequence[str],
    extracted_at: datetime,
    now: datetime,
    deletion_guard: DeletionGuard | None = None,
) -> ApplyResult:
    """Apply one upload to the area in the caller's transaction (the caller commits).

    `full` upserts every record and tombstones every live record absent from the batch;
    `delta` upserts `records` and tombstones the `deleted` ids (unknown ids count 0).  An
    upload extracted before the cached `as_of` raises `StaleUploadError`; the same
    `extracted_at` again is accepted (an idempotent re-send changes nothing).
    `deletion_guard(live, deleting)` is called before anything is written, when the upload
    tombstones records; it raises to refuse the upload (the caller rolls back).
    """
    spec = get_area(area)
    if mode not in ("full", "delta"):
        raise InvalidBatchError(f"mode must be full or delta, not {mode!r}")
    _check_ids(records, deleted)
    # Keys first: creating one writes through the key store's own connection, which must
    # not queue behind this transaction's write lock (SQLite has one per file).
    macs = school_macs(keyring, school_id)
    sealer = SlotSealer(keyring, school_id, area)
    photo_sealer = (
        SlotSealer(keyring, school_id, area, SlotKind.BLOB) if binary_field(spec) else None
    )
    namer.prepare()
    conn = session.connection()
    state = repo.lock_area(conn, school_id, area, now)
    if state.as_of is not None and extracted_at < state.as_of:
        raise StaleUploadError(f"{area} extracted at {extracted_at} is older than the cache")
    if state.tier is CacheTier.COLD:
        state = promote_area(session, keyring, blobs, school_id=school_id, area=area, now=now)
    packs = PackWriter(blobs, namer, school_id, area)
    batch = _Batch(
        keyring, sealer, photo_sealer, packs, namer, macs, school_id, spec, extracted_at, now
    )
    keyed = {macs.record_key(str(r["id"])): r for r in records}
    to_delete = {macs.record_key(i): i for i in deleted}
    wanted = None if mode == "full" else keyed.keys() | to_delete.keys()
    existing = repo.record_states(conn, school_id, area, wanted, live_records=state.record_count)
    plan = _Plan(seq=state.last_seq)
    for record_key, record in keyed.items():
        _plan_upsert(batch, plan, record_key, record, existing.get(record_key))
    gone = _tombstone_keys(mode, keyed, to_delete, existing)
    if deletion_guard is not None and gone:
        live = (
            sum(not s.deleted for s in existing.values())
            if mode == "full"
            else repo.count_live_records(conn, school_id, area)
        )
        deletion_guard(live, len(gone))
    _plan_tombstones(batch, plan, gone, _ids_of(conn, batch, gone, to_delete), existing)
    if mode == "full":
        plan.trimmed = _old_tombstones(spec, existing, keyed.keys(), now)
    _write(session, batch, plan)
    return _finish_area(conn, batch, state, plan)


def _check_ids(records: Sequence[Mapping[str, Any]], deleted: Sequence[str]) -> None:
    ids = [record.get("id") for record in records]
    if not all(isinstance(i, str) and i for i in ids):
        raise InvalidBatchError("every record needs a string id")
    if not all(isinstance(i, str) and i for i in deleted):
        raise InvalidBatchError("deleted ids must be strings")
    if len(set(ids)) != len(ids) or len(set(deleted)) != len(deleted):
        raise InvalidBatchError("a batch may not repeat an id")
    if not set(deleted).isdisjoint(ids):
        raise InvalidBatchError("a batch may not both upsert and delete one id")


def _plan_upsert(
    batch: _Batch,
    plan: _Plan,
    record_key: str,
    record: Mapping[str, Any],
    old: repo.RecordState | None,
) -> None:
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    digest = batch.macs.content_hash(canonical)
    if old is not None and not old.deleted and old.content_hash == digest:
        plan.unchanged += 1
        return
    seq = plan.next_seq()
    stored, blob_key = _split_binary(batch, record_key, seq, record, canonical)
    ciphertext = batch.records.seal(record_key, seq, stored)
    row = batch.row(
        record_key,
        seq,
        deleted=False,
        content_hash=digest,
        ciphertext=ciphertext,
        blob_key=blob_key,
    )
    if old is None:
        plan.inserts.append(row)
    else:
        plan.updates.append(row)
        if old.blob_key is not None:
            plan.stale_blobs.append(old.blob_key)
    if old is None or old.deleted:
        plan.revived += 1


def _split_binary(
    batch: _Batch, record_key: str, seq: int, record: Mapping[str, Any], canonical: bytes
) -> tuple[bytes, str | None]:
    """The bytes to seal in the row, and the blob holding the binary field, if any."""
    name = binary_field(batch.area)
    if name is None:
        return canonical, None
    rest = {key: value for key, value in record.items() if key != name}
    encoded = record.get(name)
    if encoded is None:
        return orjson.dumps(rest), None
    raw = base64.b64decode(encoded)
    assert batch.photos is not None  # made for every area with a binary field
    return orjson.dumps(rest), batch.packs.add(batch.photos.seal(record_key, seq, raw))


def _tombstone_keys(
    mode: Mode,
    keyed: Mapping[str, Any],
    to_delete: Mapping[str, str],
    existing: Mapping[str, repo.RecordState],
) -> list[str]:
    live = {key for key, state in existing.items() if not state.deleted}
    gone = live & to_delete.keys()
    if mode == "full":
        gone |= live - keyed.keys()
    return sorted(gone)


def _ids_of(
    conn: Any, batch: _Batch, keys: Iterable[str], known: Mapping[str, str]
) -> dict[str, str]:
    """Real ids of records to tombstone: from the batch, else from their sealed rows."""
    ids = {key: known[key] for key in keys if key in known}
    missing = [key for key in keys if key not in known]
    for row in repo.sealed_records(conn, batch.school_id, batch.area.name, missing):
        slot = record_slot(batch.school_id, batch.area.name, row.record_key, row.seq)
        ids[row.record_key] = open_json(batch.keyring, slot, row.ciphertext)["id"]
    return ids


def _plan_tombstones(
    batch: _Batch,
    plan: _Plan,
    keys: Sequence[str],
    ids: Mapping[str, str],
    existing: Mapping[str, repo.RecordState],
) -> None:
    for record_key in keys:
        old = existing.get(record_key)
        if old is not None and old.blob_key is not None:  # the photo goes with the record
            plan.stale_blobs.append(old.blob_key)
        seq = plan.next_seq()
        ciphertext = batch.records.seal_json(record_key, seq, {"id": ids[record_key]})
        plan.updates.append(
            batch.row(record_key, seq, deleted=True, content_hash=b"", ciphertext=ciphertext)
        )
        plan.tombstoned += 1


def _old_tombstones(
    area: Area,
    existing: Mapping[str, repo.RecordState],
    revived: Collection[str],
    now: datetime,
) -> list[str]:
    """Tombstones older than validity + 30 days, unless this batch brings them back.

    A full upload reads every row anyway, so it drops them at no extra cost.  A partner
    syncing with an `updated_since` older than that would miss those deletions; it should
    do a full listing instead (its data would be out of date by then anyway).
    """
    horizon = now - area.validity - OUT_OF_DATE_RETENTION
    return [
        key
        for key, state in existing.items()
        if state.deleted
        and state.changed_at is not None  # read for every tombstone (`record_states`)
        and state.changed_at < horizon
        and key not in revived
    ]


def _write(session: Session, batch: _Batch, plan: _Plan) -> None:
    conn = session.connection()
    repo.insert_records(conn, plan.inserts)
    repo.update_records(conn, plan.updates)
    repo.delete_records(conn, batch.school_id, batch.area.name, plan.trimmed)
    batch.packs.writing()  # past the guard: packs may be written as they fill
    photo_packs.release(session, conn, batch.packs, plan.stale_blobs)
    batch.packs.flush()  # before the commit: a committed row never names a missing pack


def _finish_area(conn: Any, batch: _Batch, state: repo.AreaState, plan: _Plan) -> ApplyResult:
    as_of = batch.extracted_at if state.as_of is None else max(state.as_of, batch.extracted_at)
    changed = plan.seq != state.last_seq or as_of != state.as_of
    data_version = state.data_version + 1 if changed else state.data_version
    repo.update_area(
        conn,
        batch.school_id,
        batch.area.name,
        as_of=as_of,
        purge_after=purge_after(batch.area.name, as_of),
        data_version=data_version,
        last_seq=plan.seq,
        record_count=state.record_count + plan.revived - plan.tombstoned,
        updated_at=batch.now,
    )
    applied = len(plan.inserts) + len(plan.updates) - plan.tombstoned
    return ApplyResult(applied, plan.tombstoned, data_version, plan.unchanged)


# --------------------------------------------------------------------------- reading


def read_page(
    session: Session,
    keyring: KeyRing,
    *,
    blobs: BlobStore,
    namer: Namer,
    school_id: str,
    area: str,
    fields: frozenset[str] | None,
    updated_since: datetime | None,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> Page:
    """One page of the area, decrypted in memory only; a cold area is promoted first.

    Without `updated_since`: live records in record-key order (a stable, opaque order).
    Each page continues strictly after the last key returned, so a page sequence never
    repeats a record, and never skips one that existed from the first page to the last,
    however many uploads land in between; each record shows its content when its page
    was read.  Records added or deleted mid-way may or may not appear.

    With `updated_since`: records and tombstones (`{"id", "deleted": true}`) changed after
    that time, in change order, bounded by the area's change sequence as it was at the first
    page (the cursor carries the bound).  So a page sequence never repeats a record, and
    lists exactly once every change made before its first page that is still the record's
    latest.  A record changed again mid-way is past the bound: it is not repeated if already
    listed, and not listed if not yet reached; either way the next sync returns it, provided
    its `updated_since` is no later than the first page's `as_of` (changes are stamped with
    broker time, never earlier than the MIS extraction time in `as_of`).

    A cursor is only valid with the same mode and `updated_since` it was issued for; a
    tampered, foreign or purged-snapshot cursor raises `InvalidCursorError`.
    """
    spec = get_area(area)
    wanted = _projection(spec, fields)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1-{MAX_LIMIT}")
    namer.prepare()  # before a promotion may take the write lock
    conn = session.connection()
    state = repo.area_state(conn, school_id, area)
    if state is None or state.as_of is None:
        raise NotCachedError(f"{area} is not cached yet")
    position = _position(namer, state, cursor, updated_since)
    if state.tier is CacheTier.COLD:
        state = promote_area(session, keyring, blobs, school_id=school_id, area=area, now=now)
    rows = _fetch(conn, state, position, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    reader = _Reader(keyring, PhotoReader(blobs), school_id, spec, wanted)
    next_cursor = _next_cursor(namer, state, position, rows[-1]) if more else None
    touch_after_commit(session, state, now)
    assert state.as_of is not None
    return Page(
        records=[reader.render(row) for row in rows],
        next_cursor=next_cursor,
        as_of=state.as_of,
        stale=is_stale(area, state.as_of, now),
        data_version=state.data_version,
    )


def _projection(area: Area, fields: frozenset[str] | None) -> tuple[str, ...]:
    if fields is None:
        return area.field_names
    unknown = fields - set(area.field_names) - {"id"}
    if unknown:
        raise UnknownFieldError(f"unknown field(s) for {area.name}: {', '.join(sorted(unknown))}")
    return tuple(name for name in area.field_names if name in fields)


def _position(
    namer: Namer, state: repo.AreaState, cursor: str | None, since: datetime | None
) -> Position:
    if cursor is None:
        if since is None:
            return Position("full", state.last_seq)
        return Position("delta", state.last_seq, since=since)
    position = decode_cursor(namer, state.school_id, state.area, cursor)
    if (position.mode == "delta") != (since is not None) or (
        since is not None and position.since != since
    ):
        raise InvalidCursorError("cursor was issued for another updated_since")
    if position.snapshot > state.last_seq:
        raise InvalidCursorError("cursor refers to data that is no longer cached")
    return position


def _fetch(conn: Any, state: repo.AreaState, position: Position, limit: int) -> list[repo.AnyRow]:
    if position.mode == "full":
        return repo.page_by_key(conn, state.school_id, state.area, position.after_key, limit)
    assert position.since is not None
    return repo.page_by_seq(
        conn,
        state.school_id,
        state.area,
        changed_after=position.since,
        after_seq=position.after_seq,
        upto_seq=position.snapshot,
        limit=limit,
    )


def _next_cursor(namer: Namer, state: repo.AreaState, position: Position, last: repo.AnyRow) -> str:
    if position.mode == "full":
        following = Position("full", position.snapshot, after_key=last.record_key)
    else:
        following = Position("delta", position.snapshot, after_seq=last.seq, since=position.since)
    return encode_cursor(namer, state.school_id, state.area, following)


@dataclass(frozen=True, slots=True)
class _Reader:
    keyring: KeyRing
    photos: PhotoReader
    school_id: str
    area: Area
    wanted: tuple[str, ...]

    def render(self, row: repo.AnyRow) -> dict[str, Any]:
        slot = record_slot(self.school_id, self.area.name, row.record_key, row.seq)
        record = open_json(self.keyring, slot, row.ciphertext)
        if row.deleted:
            return {"id": record["id"], "deleted": True}
        out = {"id": record["id"]}
        out.update((name, record.get(name)) for name in self.wanted)
        binary = binary_field(self.area)
        if binary in self.wanted and row.blob_key is not None:
            out[binary] = self._binary(row)
        return out

    def _binary(self, row: repo.AnyRow) -> str:
        sealed = self.photos.sealed(row.blob_key)
        if sealed is None:
            raise ColdBlobMissingError("a photo is missing from the blob store")
        slot = photo_slot(self.school_id, self.area.name, row.record_key, row.seq)
        return base64.b64encode(open_sealed(self.keyring, slot, sealed)).decode()


def touch_after_commit(session: Session, state: repo.AreaState, now: datetime) -> None:
    """Record a read (for demotion and refresh policy) once the caller's work commits.

    In its own short transaction after the commit: a read must not hold, or wait for, the
    write lock (SQLite has one for the whole file), and losing a touch is harmless.
    """
    last = state.last_read_at
    if last is not None and (now - last).total_seconds() < TOUCH_INTERVAL_SECONDS:
        return
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    after_commit(session, lambda: mark_read(engine, state.school_id, state.area, now))


def mark_read(engine: Engine, school_id: str, area: str, now: datetime) -> None:
    try:
        with engine.begin() as conn:
            repo.update_area(conn, school_id, area, last_read_at=now, last_requested_at=now)
    except OperationalError:
        log.warning("could not record a read of a cached area; the next read will")
