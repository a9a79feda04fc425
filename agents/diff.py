"""What changed since the last upload: per-record hashes in, upserts and deletions out.

Pure.  A record's hash is BLAKE2b of its canonical JSON (keys sorted at every level), so a
record the MIS re-renders in another key order is not a change.  The same canonical bytes
are what the upload body carries: each record is serialised once, when it is checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

Record = dict[str, Any]
HASH_BYTES = 16


def canonical(record: Mapping[str, Any]) -> bytes:
    """Compact JSON with keys sorted at every level: what is hashed and what is sent."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


# `canonical`, refusing (TypeError) what orjson would quietly write as JSON of another type:
# a date or a time (as a string), a subclass of str, int, dict or list (as its base), a
# dataclass (as an object).
STRICT_CANONICAL: Final = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def strict_canonical(record: Mapping[str, Any]) -> bytes:
    """The same bytes as `canonical`, or TypeError where the JSON would not hold the value's
    own type: for a record whose check took such values for what they would be written as."""
    return orjson.dumps(record, option=STRICT_CANONICAL)


def record_hash(record: Mapping[str, Any]) -> bytes:
    return hash_of(canonical(record))


def hash_of(encoded: bytes) -> bytes:
    return hashlib.blake2b(encoded, digest_size=HASH_BYTES).digest()


@dataclass(frozen=True, slots=True)
class Diff:
    """One batch's content and the hash changes that must be stored with it."""

    full: bool
    upserts: list[Record]
    deleted: list[str]
    # Hashes to write: every current record for a full upload, the upserts for a delta.
    hashes: dict[str, bytes] = field(repr=False)
    # Quarantined ids the MIS still has but sent invalid: never upserted, never deleted.
    kept: frozenset[str] = frozenset()
    # The upserts' canonical JSON, in the same order: the body's records.
    encoded: list[bytes] = field(default_factory=list, repr=False)

    @property
    def empty(self) -> bool:
        return not self.upserts and not self.deleted


def compute(
    records: Iterable[Record],
    stored: Mapping[str, bytes],
    *,
    full: bool,
    keep: Collection[str] = (),
    encoded: Iterable[bytes] | None = None,
    unchanged: Collection[str] = (),
) -> Diff:
    """Compare the MIS's records with the stored hashes of what the broker was sent.

    A full diff carries every record and no deletions (a full upload replaces the area);
    a delta carries new and changed records and the ids that disappeared.  Ids in `keep`
    (quarantined: in the MIS, but invalid there now) count as unchanged: a delta does not
    delete them and a full keeps their stored hash, so what the broker holds for them
    stays as it was until the MIS sends a valid record again.  `encoded` is each record's
    `canonical` JSON, when the caller has it already.  `unchanged` are ids of records in
    the MIS that the caller found hashing as stored (the delta's check): they are not in
    `records`, and count as current with their stored hash.
    """
    current: dict[str, bytes] = {}
    upserts: list[Record] = []
    sent: list[bytes] = []
    records = list(records)
    encodings = [canonical(r) for r in records] if encoded is None else encoded
    for record, body in zip(records, encodings, strict=True):
        digest = hash_of(body)
        record_id = str(record["id"])
        current[record_id] = digest
        if full or stored.get(record_id) != digest:
            upserts.append(record)
            sent.append(body)
    present = current.keys() | unchanged
    kept = frozenset(keep) - present
    if full:
        carried = {i: stored[i] for i in kept if i in stored}
        as_stored = {i: stored[i] for i in unchanged}
        return Diff(
            True, upserts, [], hashes=current | as_stored | carried, kept=kept, encoded=sent
        )
    deleted = sorted(stored.keys() - present - kept)
    changed = {str(r["id"]): current[str(r["id"])] for r in upserts}
    return Diff(
        full=False,
        upserts=upserts,
        deleted=deleted,
        hashes=changed,
        kept=kept,
        encoded=sent,
    )
