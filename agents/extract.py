"""One area from the MIS into the outbox: read, check, diff, cut into batches, spool them.

Quarantine.  Records the adapter found invalid, records the catalogue would refuse and
records too large to fit a batch on their own (`max_batch_bytes`, or the broker's lower
limit once a 413 revealed it) are left out and reported (by id, field and the kind of
problem, never the value): one bad record must not hold back the rest of its area.  A
quarantined id is never upserted nor deleted: a full upload carries its stored hash over,
and is then sent as delta batches (a real `full` would delete it at the broker), so the
broker keeps what it had for that id.  An area with too many invalid records
(`[mis] max_invalid_share`) is held whole: nothing is sent for it.

Large areas.  No upload body is built over the batch limit.  A delta's upserts are cut
into consecutive `delta` batches, its deletions put last.  A `full` batch replaces the
whole area, so it cannot be cut: when the area does not fit one batch, its full upload is
sent as `delta` batches carrying every record, then deletions of every id the broker may
still hold that the MIS no longer has.  Those ids come from the agent's own knowledge: its
stored hashes (everything it sent, or spooled ahead of this upload) and the deletions in
batches the broker refused (dead letters).  An id the broker holds that the agent never
knew about (data uploaded by another install, or the agent's state lost) is not deleted
by such a split full; a real `full` is still sent whenever the area fits one batch, so the
limit applies only to areas larger than the batch limit.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from agents.batching import Part, body_bytes, envelope_bytes, gzip_body, pack, render, spooled
from agents.config import DEFAULT_MAX_BATCH_BYTES
from agents.deletion_guard import DEFAULT_LIMIT, DeletionLimit, HeldDeletion, holds
from agents.diff import (
    HASH_BYTES,
    STRICT_CANONICAL,
    Diff,
    Record,
    canonical,
    compute,
    strict_canonical,
)
from agents.mis.base import AdapterError, MisAdapter, Quarantined, read_area
from agents.quarantine import (
    DEFAULT_INVALID_LIMIT,
    MAX_REPORTED,
    InvalidLimit,
    describe_hold,
    holds_area,
)
from agents.state import AgentState
from agents.telemetry import RecentErrors
from consent.areas import Area, get_area, record_is_valid, validate_record
from consent.record_types import record_passes

log = logging.getLogger("agents.extract")
MAX_PROBLEMS_SHOWN = 3


@dataclass(frozen=True, slots=True)
class Extraction:
    area: str
    ok: bool
    mode: str | None = None  # what the upload means: "full" even when split into deltas
    batch_id: str | None = None  # the first batch's
    records: int = 0  # in the MIS (valid ones)
    upserts: int = 0
    deleted: int = 0
    rejected: int = 0  # left out: the catalogue would refuse them, or too large
    error: str | None = None
    batch_ids: tuple[str, ...] = ()
    split: bool = False  # a full upload sent as delta batches: the area is over the limit
    held: HeldDeletion | None = None  # kept back by the mass-deletion guard: nothing spooled
    quarantined: tuple[Quarantined, ...] = ()  # left out; the broker keeps what it had

    def describe(self) -> str:
        if self.held is not None:
            return self.held.describe()
        if not self.ok:
            return f"{self.area}: failed: {self.error}"
        if len(self.batch_ids) <= 1:
            sent = f"{self.mode} batch {self.batch_id}"
        elif self.split:
            sent = f"full as {len(self.batch_ids)} delta batches from {self.batch_id}"
        else:
            sent = f"{self.mode} in {len(self.batch_ids)} batches from {self.batch_id}"
        return (
            f"{self.area}: {sent}: {self.upserts} upserted, {self.deleted} deleted of"
            f" {self.records}"
            + (f", {self.rejected} invalid or too large left out" if self.rejected else "")
        )


@dataclass(slots=True)
class Checked:
    """Records the broker will accept, and one-line problems (no content) for the rest."""

    good: list[Record] = field(default_factory=list)  # to diff: a delta's unchanged are apart
    encoded: list[bytes] = field(default_factory=list)  # each good record's canonical JSON
    # A delta's records whose content hashes as stored, by id: accepted, and not sent.
    unchanged: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)
    # Every record left out, the adapter's own quarantine included.
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """The records the broker will hold: to diff, and unchanged."""
        return len(self.good) + len(self.unchanged)

    @property
    def kept(self) -> frozenset[str]:
        """Ids the broker must keep as they are: their records are in the MIS, but invalid."""
        return frozenset(q.record_id for q in self.quarantined if q.record_id is not None)


def check_records(
    area: str, records: Iterable[Record], *, batch_limit: int | None = None, overhead: int = 0
) -> tuple[list[Record], list[str]]:
    """Split into records the broker will accept and one-line problems for the rest."""
    checked = check(area, records, batch_limit=batch_limit, overhead=overhead)
    return checked.good, checked.invalid + checked.too_large


def check(
    area: str,
    records: Iterable[Record],
    *,
    batch_limit: int | None = None,
    overhead: int = 0,
    quarantined: Iterable[Quarantined] = (),
    unchanged: Mapping[str, bytes] | None = None,
) -> Checked:
    """Validate each record and, given a batch limit, check it fits a batch on its own.

    A record fits if its compact JSON plus a batch's `overhead` (the envelope) is within
    `batch_limit`.  Problems name the record by index and id, never by content.
    `quarantined` are the records the adapter already left out.  `unchanged` (a delta's
    stored hashes) spares validating a record whose content hashes as stored: a delta does
    not send it, and it was checked when it was sent.  Most of a night's records are such:
    only their ids are kept (`Checked.unchanged`), and the diff does not see them again.
    """
    out = Checked(quarantined=list(quarantined))
    fits = sys.maxsize if batch_limit is None else batch_limit - overhead
    checker = _Checker(get_area(area), out, batch_limit, fits)
    seen = checker.seen
    stored = {} if unchanged is None else unchanged
    # The quick way through is `strict_canonical` and `hash_of` written out: it runs for
    # every record of every area each night, and the calls cost a third of it (profiled).
    dumps, strict, blake2b = orjson.dumps, STRICT_CANONICAL, hashlib.blake2b
    for index, record in enumerate(records):
        encoded = None
        if stored and record.__class__ is dict:
            record_id: Any = record.get("id")  # a str, when it has a hash stored
            known = stored.get(record_id) if record_id.__class__ is str else None
            if known is not None:
                try:
                    encoded = dumps(record, option=strict)
                except TypeError:  # not JSON, or not JSON of its own type: checked below
                    pass
                else:
                    if blake2b(encoded, digest_size=HASH_BYTES).digest() != known:
                        # Changed: checked below, its strict encoding already taken.
                        checker.one(index, record, encoded, changed=True)
                        continue
                    if len(encoded) <= fits and record_id not in seen:
                        # Sent before as it is now, and checked then.
                        seen.add(record_id)
                        out.unchanged.append(record_id)
                        continue
        checker.one(index, record, encoded, changed=False)
    return out


@dataclass(slots=True)
class _Checker:
    """The way through for a record that is not as stored (new, changed, or sent whole)."""

    spec: Area
    out: Checked
    batch_limit: int | None
    fits: int  # bytes a record may take: the limit less a batch's envelope
    seen: set[str] = field(default_factory=set)  # ids accepted so far

    def one(self, index: int, record: Any, encoded: bytes | None, *, changed: bool) -> None:
        """Check `record` into `out`.  `encoded` is its `strict_canonical` JSON if `changed`
        (its hash is not the stored one), or its canonical JSON if it hashed as stored but
        could not go the quick way (a second copy of its id, or too large for a lowered
        limit): such a record was checked when it was sent."""
        spec, out = self.spec, self.out
        if encoded is None or changed:
            encoded = _encoding_if_valid(spec, record, encoded)
        if encoded is not None or record_is_valid(spec, record):
            errors = []
        else:
            errors = list(validate_record(spec, index, record))
        record_id = record.get("id") if isinstance(record, dict) else None
        if not errors and record_id in self.seen:
            out.invalid.append(f"record {index} ({record_id}): duplicate id")
            return
        if errors:
            first = errors[0]
            shown = f" ({first.record_id})" if first.record_id else ""
            out.invalid.append(f"record {index}{shown} field {first.field!r}: {first.message}")
            valid_id = first.field != "id" and first.record_id is not None
            out.quarantined.append(
                Quarantined(first.record_id if valid_id else None, first.field, first.message)
            )
            return
        self.seen.add(str(record_id))
        if encoded is None:
            encoded = canonical(record)
        if len(encoded) > self.fits:
            size = len(encoded)
            out.too_large.append(
                f"record {index} ({record_id}): {size} bytes as JSON, too large for"
                f" a batch (limit {self.batch_limit} bytes)"
            )
            out.quarantined.append(
                Quarantined(str(record_id), "", f"too large for a batch ({size} bytes)")
            )
            return
        out.good.append(record)
        out.encoded.append(encoded)


def _encoding_if_valid(spec: Area, record: Any, strict: bytes | None = None) -> bytes | None:
    """The record's canonical JSON if its check in C passes it, else None: then
    `record_is_valid` decides, as it did for every record before (at twice the cost).
    `strict` is its `strict_canonical` JSON, if taken already."""
    if record.__class__ is not dict or not record_passes(spec, record):
        return None
    if strict is not None:
        return strict
    try:
        return strict_canonical(record)
    except TypeError:  # a value msgspec took for another type (`record_passes`)
        return None


def build_body(batch_id: str, area: str, extracted_at: datetime, diff: Diff) -> bytes:
    """One gzipped body holding the whole diff (no size limit)."""
    mode = "full" if diff.full else "delta"
    return gzip_body(render(batch_id, area, mode, extracted_at, diff.encoded, diff.deleted))


class Extractor:
    def __init__(
        self,
        adapter: MisAdapter,
        state: AgentState,
        *,
        clock: Callable[[], datetime],
        errors: RecentErrors,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        deletion_limit: DeletionLimit = DEFAULT_LIMIT,
        invalid_limit: InvalidLimit = DEFAULT_INVALID_LIMIT,
    ) -> None:
        self._adapter = adapter
        self._limit = deletion_limit
        self._invalid_limit = invalid_limit
        # The broker applies its own guard: it must know the school chose another threshold.
        self._extra = (
            None if deletion_limit.is_default else {"deletion_limit": deletion_limit.as_json()}
        )
        self._state = state
        self._clock = clock
        self._errors = errors
        self._max_batch_bytes = max_batch_bytes

    def extract(self, area: str, *, full: bool, confirmed: bool = False) -> Extraction:
        """Read, check, diff and spool one area; `confirmed` lifts the mass-deletion guard once."""
        started, now = time.monotonic(), self._extracted_at(area)
        limit = self._state.batch_limit(self._max_batch_bytes)
        # A full's envelope is smaller ("full" is shorter than "delta").
        overhead = envelope_bytes(area, "delta", now, self._extra)
        base = self._state.read_hashes(area)
        stored = base.hashes
        try:
            read = read_area(self._adapter, area)
            full = full and not (read.from_delta or read.keep_absent)
            checked = check(
                area,
                read.records,
                batch_limit=limit,
                overhead=overhead,
                quarantined=read.quarantined,
                unchanged=None if full else stored,  # a full sends every record: checks all
            )
        except AdapterError as exc:
            return self._failed(area, str(exc), started)
        except Exception as exc:  # an adapter bug must not stop the other areas
            log.exception("adapter crashed", extra={"fields": {"area": area}})
            return self._failed(area, f"adapter error: {type(exc).__name__}", started)
        self._report_problems(area, checked)
        if holds_area(self._invalid_limit, checked.accepted, len(checked.quarantined)):
            message = describe_hold(
                area, checked.accepted, len(checked.quarantined), self._invalid_limit
            )
            result = self._failed(area, message, started)
            return replace(result, quarantined=tuple(checked.quarantined))
        keep = checked.kept | (stored.keys() if read.keep_absent else frozenset())
        diff = compute(
            checked.good,
            stored,
            full=full,
            keep=keep,
            encoded=checked.encoded,
            unchanged=checked.unchanged,
        )
        held = self._guard(area, diff, stored)
        if held is not None and not confirmed:
            return self._held(held, started)
        self._state.release_hold(area)
        mode, parts = self._plan(area, now, diff, stored, limit)
        batch_ids = self._state.spool(
            spooled(area, mode, now, parts, self._extra),
            diff.hashes,
            diff.deleted,
            now=self._clock(),
            duration=time.monotonic() - started,
            total_records=checked.accepted,
            full=diff.full,
            base=base,
        )
        result = Extraction(
            area,
            True,
            "full" if diff.full else "delta",
            batch_ids[0],
            checked.accepted,
            len(diff.upserts),
            sum(len(p.deleted) for p in parts),
            len(checked.quarantined),
            batch_ids=tuple(batch_ids),
            split=diff.full and mode == "delta",
            quarantined=tuple(checked.quarantined),
        )
        log.info("area spooled", extra={"fields": _fields(result)})
        return result

    def _plan(
        self, area: str, now: datetime, diff: Diff, stored: Mapping[str, bytes], limit: int
    ) -> tuple[str, list[Part]]:
        """The batches' mode and content: one real full if it fits, else deltas (see above)."""
        encoded = diff.encoded
        if diff.full:
            # A real full deletes every id it leaves out: never one with a quarantined id.
            fits = body_bytes(envelope_bytes(area, "full", now, self._extra), encoded, ()) <= limit
            if fits and not diff.kept:
                return "full", [Part(records=encoded)]
            # Ids of records in the MIS are upserted, never deleted: no batch may do both.
            known = stored.keys() | self._state.dead_letter_deletions(area)
            deleted: Sequence[str] = sorted(known - diff.hashes.keys() - diff.kept)
        else:
            deleted = diff.deleted
        return "delta", pack(
            encoded, deleted, limit=limit, overhead=envelope_bytes(area, "delta", now, self._extra)
        )

    def _guard(self, area: str, diff: Diff, stored: Mapping[str, bytes]) -> HeldDeletion | None:
        """The upload's deletions measured against what the broker may hold, if too many.

        A full's deletions are every id the broker may hold that the MIS no longer has:
        the stored hashes and the deletions the broker refused (a batch it held is parked).
        """
        if diff.full:
            known = stored.keys() | self._state.dead_letter_deletions(area)
            records, deleting = len(known), len(known - diff.hashes.keys() - diff.kept)
        else:
            records, deleting = len(stored), len(diff.deleted)
        return (
            HeldDeletion(area, records, deleting)
            if holds(self._limit, records, deleting, area)
            else None
        )

    def _held(self, held: HeldDeletion, started: float) -> Extraction:
        now = self._clock()
        message = held.describe()
        self._state.hold_deletion(held.area, records=held.records, deleting=held.deleting, now=now)
        self._state.extraction_failed(
            held.area, now=now, error=message, duration=time.monotonic() - started
        )
        self._errors.add(message, now)
        log.warning(
            "mass deletion held",
            extra={
                "fields": {"area": held.area, "records": held.records, "deleting": held.deleting}
            },
        )
        return Extraction(held.area, False, error=message, held=held)

    def _extracted_at(self, area: str) -> datetime:
        """Now, but never earlier than the area's last batch: the broker refuses older data."""
        now = self._clock()
        last = self._state.area(area)
        if (
            last is not None
            and last.last_extracted_at is not None
            and now <= last.last_extracted_at
        ):
            return last.last_extracted_at + timedelta(microseconds=1)
        return now

    def _failed(self, area: str, error: str, started: float) -> Extraction:
        now = self._clock()
        self._state.extraction_failed(
            area, now=now, error=error, duration=time.monotonic() - started
        )
        self._errors.add(f"{area}: extraction failed: {error}", now)
        log.error("extraction failed", extra={"fields": {"area": area, "error": error}})
        return Extraction(area, False, error=error)

    def _report_problems(self, area: str, checked: Checked) -> None:
        """Store the area's quarantine (status, telemetry), log it, and note it as an error."""
        now = self._clock()
        self._state.set_quarantine(
            area,
            ((q.record_id, q.field, q.problem, q.where) for q in checked.quarantined),
            now=now,
        )
        from_adapter = len(checked.quarantined) - len(checked.invalid) - len(checked.too_large)
        if from_adapter:
            shown = "; ".join(q.describe() for q in checked.quarantined[:MAX_PROBLEMS_SHOWN])
            self._errors.add(
                f"{area}: {len(checked.quarantined)} record(s) quarantined: {shown}", now
            )
        for kind, problems in (("invalid", checked.invalid), ("too large", checked.too_large)):
            if problems and not from_adapter:
                shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
                self._errors.add(f"{area}: {len(problems)} {kind} record(s) left out: {shown}", now)
        if checked.quarantined:
            log.warning(
                "records quarantined",
                extra={
                    "fields": {
                        "area": area,
                        "count": len(checked.quarantined),
                        "records": [q.as_json() for q in checked.quarantined[:MAX_REPORTED]],
                    }
                },
            )


def _fields(result: Extraction) -> dict[str, object]:
    return {
        "area": result.area,
        "mode": result.mode,
        "batch_id": result.batch_id,
        "records": result.records,
        "upserts": result.upserts,
        "deleted": result.deleted,
        "rejected": result.rejected,
        "batches": len(result.batch_ids),
        "split": result.split,
    }
