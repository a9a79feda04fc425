"""Sending the outbox: oldest first, one area never overtaking itself, retried with backoff.

What each answer does to a batch:
- 200 (applied now, or an idempotent replay of an earlier apply): it leaves the outbox;
- 409 stale-upload (the broker holds newer data): dropped, and the area's next upload is
  full, in case what superseded it was not ours;
- 413 payload-too-large (the broker's limit is below `max_batch_bytes`): cut in two, or to
  the problem's `limit_bytes`, into delta batches with new batch_ids that take its place
  in the outbox (one transaction), which are sent in this same flush; a full batch is cut
  into deltas of its records then deletions of the ids it retires (`AgentState.spool`).
  The limit (or, if not stated, the size refused) is remembered, so later extractions
  build batches that fit.  A batch of one record still too large is parked as below, its
  id (never its content) reported, and the next extraction leaves that record out;
- any other 4xx, including a `batch_id` reused with other content (a bug): parked in the
  dead-letter table, reported in telemetry, and the area's next upload is full, because
  the broker's copy no longer matches our hashes;
- 5xx, 429 and network failures: retried in this flush with exponential backoff and full
  jitter (tenacity) until the flush's deadline, then left with a persisted next try;
- 401/403: left in place with a persisted next try (a key or school problem, never the
  batch's), and the flush stops.
"""

from __future__ import annotations

import gzip
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import tenacity

from agents.batching import envelope_bytes, pack, spooled
from agents.config import MIN_BATCH_BYTES, UploadSettings
from agents.state import AgentState, OutboxEntry, parse_iso
from agents.telemetry import RecentErrors
from agents.uploader import BrokerClient, Outcome, SendResult

log = logging.getLogger("agents.spool")

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
TOO_LARGE: Final = 413


@dataclass
class FlushReport:
    confirmed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    resplit: list[str] = field(default_factory=list)  # too large: replaced by smaller ones
    stopped: str | None = None  # why the flush ended early, if it did

    @property
    def clean(self) -> bool:
        return not (self.deferred or self.stopped)


def backoff_seconds(attempts: int, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform up to min(cap, 2**attempts), at least half a second."""
    return max(0.5, rng.uniform(0, min(cap, 2.0 ** min(attempts, 30))))


class Spool:
    def __init__(
        self,
        state: AgentState,
        client: Callable[[], BrokerClient],
        settings: UploadSettings,
        *,
        clock: Clock,
        sleep: Sleep,
        errors: RecentErrors,
        rng: random.Random | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self._state = state
        self._client = client
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._errors = errors
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._cancelled = cancelled  # the agent is stopping: no more tries, keep the rest
        # Small batches go several to a request while the broker takes sequences.
        self._together = settings.batches_per_request > 1

    def flush(
        self, deadline: datetime | None = None, on_settled: Callable[[], object] | None = None
    ) -> FlushReport:
        """Send what is due, oldest first, until the outbox is empty or the deadline passes.

        `on_settled` is called after each batch is sent and answered (a progress bar).
        """
        report = FlushReport()
        waiting: set[str] = set()  # areas whose next batch waits: so does the rest of each
        end = deadline or self._clock() + timedelta(seconds=self._settings.retry_budget_seconds)
        together = self._together  # a sequence that fails sends the rest of this flush alone
        again = True
        while again and report.stopped is None:
            again = False
            # A batch re-split this pass is replaced by pieces the pass's list lacks, and its
            # area's later batches now follow them: read the outbox again before going on.
            resplit: set[str] = set()
            # Batches already answered, sent together with an earlier one of this pass: each
            # is settled when its turn comes, so the outbox is settled in order as before.
            answered: dict[str, SendResult] = {}
            entries = self._state.pending()
            for index, entry in enumerate(entries):
                if entry.area in waiting or entry.area in resplit:
                    continue
                result = answered.pop(entry.batch_id, None)
                if result is None:
                    now = self._clock()
                    if entry.next_attempt_at is not None and entry.next_attempt_at > now:
                        waiting.add(entry.area)
                        report.deferred.append(entry.batch_id)
                        continue
                    if now >= end or self._cancelled():
                        report.stopped = "deadline" if now >= end else "stopping"
                        break
                    if together:
                        group = self._group(entries, index, waiting | resplit, now)
                        if len(group) > 1:
                            together = self._send_together(group, answered)
                            result = answered.pop(entry.batch_id, None)
                if result is None:
                    result = self._send(entry, end)
                if on_settled is not None:
                    on_settled()
                if result.outcome is Outcome.REFUSED and result.status == TOO_LARGE:
                    if self._too_large(entry, result, report):
                        resplit.add(entry.area)
                        again = True
                    continue
                if not self._settle(entry, result, report):
                    waiting.add(entry.area)
                    if _agent_wide(result):
                        report.stopped = result.detail  # the broker, not the batch: stop here
                        break
        return report

    def _group(
        self, entries: list[OutboxEntry], start: int, blocked: set[str], now: datetime
    ) -> list[tuple[OutboxEntry, bytes]]:
        """The batches to send with `entries[start]`, in outbox order, with their bodies.

        As many as `batches_per_request` and `max_batch_bytes` (or the broker's lower limit)
        allow together, so a sequence is never larger than one batch may be.  An area whose
        batch is left out (not due, or its area waiting) has none of its later batches in
        the group: one area never overtakes itself.
        """
        limit = self._state.batch_limit(self._settings.max_batch_bytes)
        blocked = set(blocked)
        group: list[tuple[OutboxEntry, bytes]] = []
        size = 0
        for entry in entries[start:]:
            if len(group) == self._settings.batches_per_request:
                break
            if entry.area in blocked:
                continue
            if entry.next_attempt_at is not None and entry.next_attempt_at > now:
                blocked.add(entry.area)
                continue
            size += entry.inflated + 1  # and a newline
            if group and size > limit:
                break
            body = self._state.body(entry.batch_id)
            if body is None:  # confirmed meanwhile by another run: its turn says so
                break
            group.append((entry, body))
        return group

    def _send_together(
        self, group: list[tuple[OutboxEntry, bytes]], answered: dict[str, SendResult]
    ) -> bool:
        """One request for the group: each answer goes to `answered`; False if it failed.

        A failed request leaves every batch of the group to be sent alone, with the usual
        retries, for the rest of this flush: the broker applied none of them, or applied
        some and answers a repeat of those as it did the first time.  A broker that has no
        sequence endpoint (404, 405: an older release) is sent one batch a request from then
        on.  A 413 teaches the broker's limit, as a single batch's does.
        """
        sent = self._client().upload_sequence([body for _, body in group])
        if sent.failed is None:
            for (entry, _), result in zip(group, sent.results, strict=False):
                answered[entry.batch_id] = result
            log.debug(
                "batches sent together",
                extra={"fields": {"batches": len(group), "answered": len(sent.results)}},
            )
            return True
        failed = sent.failed
        if failed.status in (404, 405):
            self._together = False
        elif failed.status == TOO_LARGE:
            self._learn_limit(_limit_bytes(failed.body), sum(e.inflated + 1 for e, _ in group))
        log.warning(
            "batches sent together failed; sending them one at a time",
            extra={"fields": {"batches": len(group), "error": failed.detail}},
        )
        return False

    def _send(self, entry: OutboxEntry, end: datetime) -> SendResult:
        body = self._state.body(entry.batch_id)
        if body is None:  # confirmed meanwhile by another run; nothing to send
            return SendResult(Outcome.CONFIRMED, None, "already confirmed")
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda r: r.outcome is Outcome.RETRY),
            wait=tenacity.wait_random_exponential(
                multiplier=1, min=0.5, max=self._settings.retry_cap_seconds
            ),
            stop=lambda rs: (
                self._cancelled() or self._clock() + timedelta(seconds=rs.upcoming_sleep) >= end
            ),
            sleep=self._sleep,
            before_sleep=lambda rs: self._log_retry(entry, rs),
            retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else None,
        )
        result: SendResult = retrying(self._client().upload, body)
        return result

    def _log_retry(self, entry: OutboxEntry, state: tenacity.RetryCallState) -> None:
        result = state.outcome.result() if state.outcome else None
        log.warning(
            "upload failed, retrying",
            extra={
                "fields": {
                    "batch_id": entry.batch_id,
                    "area": entry.area,
                    "attempt": state.attempt_number,
                    "wait_seconds": round(state.upcoming_sleep, 2),
                    "error": result.detail if isinstance(result, SendResult) else None,
                }
            },
        )

    def _settle(self, entry: OutboxEntry, result: SendResult, report: FlushReport) -> bool:
        """Apply the answer to the outbox; False when the batch is still waiting."""
        now = self._clock()
        fields = {"batch_id": entry.batch_id, "area": entry.area, "mode": entry.mode}
        if result.outcome is Outcome.CONFIRMED:
            self._state.confirm(entry.batch_id, now=now)
            report.confirmed.append(entry.batch_id)
            log.info("batch confirmed", extra={"fields": {**fields, "answer": result.body}})
            return True
        if result.outcome is Outcome.SUPERSEDED:
            self._state.drop(entry.batch_id)
            report.dropped.append(entry.batch_id)
            log.warning("batch superseded by newer data", extra={"fields": fields})
            return True
        if result.outcome is Outcome.REFUSED:
            self._state.dead_letter(
                entry.batch_id, now=now, http_status=result.status, problem=result.detail
            )
            report.dead.append(entry.batch_id)
            self._errors.add(f"{entry.area}: batch {entry.batch_id} refused: {result.detail}", now)
            log.error("batch refused; parked", extra={"fields": {**fields, "error": result.detail}})
            return True
        attempts = entry.attempts + 1
        wait = backoff_seconds(attempts, self._settings.retry_cap_seconds, self._rng)
        self._state.defer(
            entry.batch_id, next_attempt_at=now + timedelta(seconds=wait), error=result.detail
        )
        report.deferred.append(entry.batch_id)
        self._errors.add(f"{entry.area}: upload failed: {result.detail}", now)
        log.warning("upload deferred", extra={"fields": {**fields, "error": result.detail}})
        return False

    def _too_large(self, entry: OutboxEntry, result: SendResult, report: FlushReport) -> bool:
        """A 413: replace the batch by smaller ones (True), or park it if it is one record.

        Nothing of a refused batch was applied, so its pieces may carry new batch_ids.  The
        pieces are cut to the broker's stated limit when that makes more than one, else in
        two halves by size, so each refusal makes progress until a piece fits or holds a
        single record.
        """
        now = self._clock()
        fields = {"batch_id": entry.batch_id, "area": entry.area, "mode": entry.mode}
        body_gz = self._state.body(entry.batch_id)
        if body_gz is None:  # confirmed or parked meanwhile: nothing left to cut
            return False
        limit = _limit_bytes(result.body)
        raw = gzip.decompress(body_gz)
        self._learn_limit(limit, len(raw))
        document = orjson.loads(raw)
        records = [orjson.dumps(r) for r in document["records"]]
        deleted = [str(i) for i in document["deleted"]] + self._state.retired(entry.batch_id)
        if len(records) + len(deleted) < 2:
            self._park_too_large(entry, result, document, len(raw), limit, report)
            return False
        extracted_at = parse_iso(document["extracted_at"])
        assert extracted_at is not None  # the agent wrote it
        overhead = envelope_bytes(entry.area, "delta", extracted_at)
        parts = []
        if limit is not None and limit < len(raw):
            parts = pack(records, deleted, limit=limit, overhead=overhead)
        if len(parts) < 2:  # no limit stated, or ours says it fits: halve, to make progress
            parts = pack(records, deleted, limit=len(raw) // 2, overhead=overhead)
        pieces = list(spooled(entry.area, "delta", extracted_at, parts))
        if not self._state.replace(entry.batch_id, pieces, now=now):
            return False
        report.resplit.append(entry.batch_id)
        message = (
            f"{entry.area}: batch {entry.batch_id} ({len(raw)} bytes) over the broker's limit"
            f" ({limit if limit is not None else 'not stated'}): cut into {len(pieces)};"
            " lower upload.max_batch_bytes"
        )
        self._errors.add(message, now)
        log.warning(
            "batch too large for the broker; cut into smaller batches",
            extra={
                "fields": {
                    **fields,
                    "bytes": len(raw),
                    "limit_bytes": limit,
                    "pieces": [p.batch_id for p in pieces],
                }
            },
        )
        return True

    def _learn_limit(self, stated: int | None, refused: int) -> None:
        """Remember the broker's limit, so later extractions build batches that fit.

        A stated limit is the broker's word and replaces what we knew (it may have gone
        up).  Without one (a proxy's 413), all we know is that `refused` bytes are too
        many: the bound only ever comes down, and repeated refusals bring it to the truth.
        """
        if stated is not None:
            self._state.set_upload_limit(stated)
            return
        known = self._state.upload_limit()
        bound = refused - 1 if known is None else min(known, refused - 1)
        if bound >= MIN_BATCH_BYTES:
            self._state.set_upload_limit(bound)

    def _park_too_large(
        self,
        entry: OutboxEntry,
        result: SendResult,
        document: Mapping[str, Any],
        size: int,
        limit: int | None,
        report: FlushReport,
    ) -> None:
        """One record alone is over the broker's limit: park it, naming the id, not the content."""
        now = self._clock()
        records = document.get("records") or []
        what = f"record {records[0].get('id')}" if records else "the batch"
        stated = f"{limit} bytes" if limit is not None else "not stated"
        problem = (
            f"{what} alone is {size} bytes as a batch, over the broker's limit ({stated}):"
            f" parked; {result.detail}"
        )
        self._state.dead_letter(entry.batch_id, now=now, http_status=result.status, problem=problem)
        report.dead.append(entry.batch_id)
        self._errors.add(f"{entry.area}: batch {entry.batch_id}: {problem}", now)
        log.error(
            "record too large for the broker; parked",
            extra={
                "fields": {
                    "batch_id": entry.batch_id,
                    "area": entry.area,
                    "record_id": records[0].get("id") if records else None,
                    "bytes": size,
                    "limit_bytes": limit,
                }
            },
        )


def _limit_bytes(problem: Mapping[str, Any] | None) -> int | None:
    """The problem's `limit_bytes`, if it is a plausible one (a proxy's 413 has none)."""
    value = problem.get("limit_bytes") if problem else None
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_BATCH_BYTES:
        return None
    return value


def _agent_wide(result: SendResult) -> bool:
    """Unreachable, refused key or rate-limited: the other areas would fare no better."""
    return result.status in (None, 401, 403, 429)
