"""What changed since the last upload: per-record hashes in, upserts and deletions out.

Pure.  A record's hash is BLAKE2b of its canonical JSON (keys sorted at every level), so a
record the MIS re-renders in another key order is not a change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

Record = dict[str, Any]
HASH_BYTES = 16


def record_hash(record: Mapping[str, Any]) -> bytes:
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=HASH_BYTES).digest()


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

    @property
    def empty(self) -> bool:
        return not self.upserts and not self.deleted


def compute(
    records: Iterable[Record],
    stored: Mapping[str, bytes],
    *,
    full: bool,
    keep: Collection[str] = (),
) -> Diff:
    """Compare the MIS's records with the stored hashes of what the broker was sent.

    A full diff carries every record and no deletions (a full upload replaces the area);
    a delta carries new and changed records and the ids that disappeared.  Ids in `keep`
    (quarantined: in the MIS, but invalid there now) count as unchanged: a delta does not
    delete them and a full keeps their stored hash, so what the broker holds for them
    stays as it was until the MIS sends a valid record again.
    """
    current: dict[str, bytes] = {}
    upserts: list[Record] = []
    for record in records:
        digest = record_hash(record)
        record_id = str(record["id"])
        current[record_id] = digest
        if full or stored.get(record_id) != digest:
            upserts.append(record)
    kept = frozenset(keep) - current.keys()
    if full:
        carried = {i: stored[i] for i in kept if i in stored}
        return Diff(True, upserts, [], hashes=current | carried, kept=kept)
    deleted = sorted(set(stored) - set(current) - kept)
    changed = {str(r["id"]): current[str(r["id"])] for r in upserts}
    return Diff(full=False, upserts=upserts, deleted=deleted, hashes=changed, kept=kept)
