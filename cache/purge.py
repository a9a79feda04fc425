"""Permanent deletion: areas more than 30 days out of date, and closed schools' data.

Purge finds expired areas through the `purge_after` index and deletes each by primary-key
prefix, so its cost grows with what expired, not with the size of the cache.  Blobs are
deleted by the area's prefix while the area's row is locked: a concurrent upload of the
same area waits, so it cannot lose a photo it has just written under that prefix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete
from sqlalchemy.orm import Session

from cache import repository as repo
from cache.blobs import BlobStore
from cache.freshness import rfc3339
from cache.hot import HotCache
from cache.keys import DataKeyStore, KeyRing
from cache.models import CacheTier, cached_areas, cached_records
from cache.naming import Namer
from cache.unit import after_commit
from consent.areas import CATALOGUE

DEFAULT_BATCH: Final = 1000


@dataclass(frozen=True, slots=True)
class PurgedArea:
    school_id: str
    area: str
    tier: CacheTier
    as_of: datetime | None
    purge_after: datetime | None
    records: int  # live records the area held


@dataclass(frozen=True, slots=True)
class PurgeReport:
    now: datetime
    dry_run: bool
    areas: tuple[PurgedArea, ...]
    rows: int  # warm-tier rows removed (records and tombstones); counted in a dry run

    @property
    def records(self) -> int:
        return sum(area.records for area in self.areas)


def _purged(state: repo.AreaState) -> PurgedArea:
    return PurgedArea(
        state.school_id,
        state.area,
        state.tier,
        state.as_of,
        state.purge_after,
        state.record_count,
    )


def purge_expired(
    session: Session,
    blobs: BlobStore,
    *,
    namer: Namer,
    now: datetime,
    dry_run: bool,
    hot: HotCache | None = None,
    limit: int = DEFAULT_BATCH,
) -> PurgeReport:
    """Remove (or, dry, list) up to `limit` areas more than 30 days out of date.

    An area is kept at exactly validity + 30 days after its `as_of` and removed a moment
    later.  Call again until the report is empty to purge everything.
    """
    namer.prepare()
    conn = session.connection()
    expired = repo.expired_areas(conn, now, limit)
    if dry_run:
        rows = sum(repo.count_records(conn, s.school_id, s.area) for s in expired)
        return PurgeReport(now, True, tuple(_purged(s) for s in expired), rows)
    purged: list[PurgedArea] = []
    rows = 0
    for candidate in expired:
        state = repo.lock_existing_area(conn, candidate.school_id, candidate.area)
        if state is None or state.purge_after is None or not state.purge_after < now:
            continue  # refreshed since it was listed
        blobs.delete_prefix(namer.blob_prefix(state.school_id, state.area))
        rows += repo.delete_area(conn, state.school_id, state.area)
        _invalidate_after_commit(session, hot, state.school_id, [state.area])
        purged.append(_purged(state))
    return PurgeReport(now, False, tuple(purged), rows)


def _invalidate_after_commit(
    session: Session, hot: HotCache | None, school_id: str, areas: Iterable[str]
) -> None:
    if hot is None:
        return
    names = list(areas)
    after_commit(session, lambda: [hot.invalidate_area(school_id, area) for area in names])


def format_report(report: PurgeReport) -> dict[str, Any]:
    """The JSON object `misbroker purge [--dry-run] --json` prints."""
    return {
        "as_of": rfc3339(report.now),
        "dry_run": report.dry_run,
        "areas": len(report.areas),
        "records": report.records,
        "rows": report.rows,
        "items": [
            {
                "school_id": item.school_id,
                "area": item.area,
                "tier": item.tier.value,
                "records": item.records,
                "data_as_of": None if item.as_of is None else rfc3339(item.as_of),
                "purge_after": None if item.purge_after is None else rfc3339(item.purge_after),
            }
            for item in report.areas
        ],
    }


def shred_due(closed_at: datetime, now: datetime, retention_days: float) -> bool:
    """A closed school is shredded from exactly `retention_days` after it closed."""
    return now >= closed_at + timedelta(days=retention_days)


def shred_closed_schools(
    session: Session,
    keyring: KeyRing,
    key_store: DataKeyStore,
    blobs: BlobStore,
    *,
    namer: Namer,
    closed_schools: Iterable[tuple[str, datetime]],
    now: datetime,
    retention_days: float,
    hot: HotCache | None = None,
) -> list[str]:
    """Crypto-shred every closed school past its retention, then delete its cache data.

    The keys go first, in their own committed transaction: from then on nothing of the
    school decrypts anywhere, backups included, even if deleting the rows and blobs fails
    (a later run finishes that).  Returns the schools acted on in this run.
    """
    namer.prepare()
    conn = session.connection()
    due = [
        school_id
        for school_id, closed_at in closed_schools
        if shred_due(closed_at, now, retention_days)
        and not (key_store.is_shredded(school_id) and not repo.school_areas(conn, school_id))
    ]
    # Every key before any row: shredding writes through the key store's own connection,
    # which on SQLite would wait forever behind this transaction's write lock.
    for school_id in due:
        keyring.shred(school_id)
    for school_id in due:
        for area in CATALOGUE:
            blobs.delete_prefix(namer.blob_prefix(school_id, area))
        conn.execute(delete(cached_records).where(cached_records.c.school_id == school_id))
        conn.execute(delete(cached_areas).where(cached_areas.c.school_id == school_id))
        _invalidate_after_commit(session, hot, school_id, CATALOGUE)
    return due
