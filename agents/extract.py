"""One area from the MIS into the outbox: read, check, diff, build the batch, spool it.

Records the catalogue would refuse are left out and reported (by index, id and field, not
content): one bad record in the MIS must not hold back the rest of its area.
"""

from __future__ import annotations

import gzip
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from agents.diff import Diff, Record, compute
from agents.mis.base import AdapterError, MisAdapter
from agents.state import AgentState, SpooledBatch, iso
from agents.telemetry import RecentErrors
from consent.areas import get_area, validate_record

log = logging.getLogger("agents.extract")
GZIP_LEVEL = 6
MAX_PROBLEMS_SHOWN = 3


@dataclass(frozen=True, slots=True)
class Extraction:
    area: str
    ok: bool
    mode: str | None = None
    batch_id: str | None = None
    records: int = 0  # in the MIS (valid ones)
    upserts: int = 0
    deleted: int = 0
    rejected: int = 0  # left out: the catalogue would refuse them
    error: str | None = None

    def describe(self) -> str:
        if not self.ok:
            return f"{self.area}: failed: {self.error}"
        return (
            f"{self.area}: {self.mode} batch {self.batch_id}: {self.upserts} upserted,"
            f" {self.deleted} deleted of {self.records}"
            + (f", {self.rejected} invalid left out" if self.rejected else "")
        )


def check_records(area: str, records: Iterable[Record]) -> tuple[list[Record], list[str]]:
    """Split into records the broker will accept and one-line problems for the rest."""
    spec = get_area(area)
    good: list[Record] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, record in enumerate(records):
        errors = list(validate_record(spec, index, record))
        record_id = record.get("id") if isinstance(record, dict) else None
        if not errors and record_id in seen:
            problems.append(f"record {index} ({record_id}): duplicate id")
            continue
        if errors:
            first = errors[0]
            shown = f" ({first.record_id})" if first.record_id else ""
            problems.append(f"record {index}{shown} field {first.field!r}: {first.message}")
            continue
        seen.add(str(record_id))
        good.append(record)
    return good, problems


def build_body(batch_id: str, area: str, extracted_at: datetime, diff: Diff) -> bytes:
    document = {
        "batch_id": batch_id,
        "area": area,
        "mode": "full" if diff.full else "delta",
        "extracted_at": iso(extracted_at),
        "records": diff.upserts,
        "deleted": diff.deleted,
    }
    # mtime=0: the same batch always gzips to the same bytes.
    return gzip.compress(orjson.dumps(document), compresslevel=GZIP_LEVEL, mtime=0)


class Extractor:
    def __init__(
        self,
        adapter: MisAdapter,
        state: AgentState,
        *,
        clock: Callable[[], datetime],
        errors: RecentErrors,
    ) -> None:
        self._adapter = adapter
        self._state = state
        self._clock = clock
        self._errors = errors

    def extract(self, area: str, *, full: bool) -> Extraction:
        started, now = time.monotonic(), self._extracted_at(area)
        try:
            records, problems = check_records(area, self._adapter.extract(area))
        except AdapterError as exc:
            return self._failed(area, str(exc), started)
        except Exception as exc:  # an adapter bug must not stop the other areas
            log.exception("adapter crashed", extra={"fields": {"area": area}})
            return self._failed(area, f"adapter error: {type(exc).__name__}", started)
        if problems:
            self._report_problems(area, problems)
        diff = compute(records, self._state.hashes(area), full=full)
        batch_id = str(uuid.uuid4())
        batch = SpooledBatch(
            batch_id=batch_id,
            area=area,
            mode="full" if diff.full else "delta",
            extracted_at=now,
            records=len(diff.upserts),
            deleted=len(diff.deleted),
            body_gz=build_body(batch_id, area, now, diff),
        )
        self._state.spool(
            batch,
            diff.hashes,
            diff.deleted,
            now=self._clock(),
            duration=time.monotonic() - started,
            total_records=len(records),
        )
        result = Extraction(
            area,
            True,
            batch.mode,
            batch_id,
            len(records),
            batch.records,
            batch.deleted,
            len(problems),
        )
        log.info("area spooled", extra={"fields": _fields(result)})
        return result

    def _extracted_at(self, area: str) -> datetime:
        """Now, but never earlier than the area's last batch: the broker refuses older data."""
        now = self._clock()
        last = self._state.areas().get(area)
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

    def _report_problems(self, area: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        message = f"{area}: {len(problems)} invalid record(s) left out: {shown}"
        self._errors.add(message, self._clock())
        log.warning(
            "invalid records left out", extra={"fields": {"area": area, "problems": problems[:50]}}
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
    }
