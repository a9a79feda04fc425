"""Sending the outbox: oldest first, one area never overtaking itself, retried with backoff.

What each answer does to a batch:
- 200 (applied now, or an idempotent replay of an earlier apply): it leaves the outbox;
- 409 stale-upload (the broker holds newer data): dropped, and the area's next upload is
  full, in case what superseded it was not ours;
- any other 4xx, including a `batch_id` reused with other content (a bug): parked in the
  dead-letter table, reported in telemetry, and the area's next upload is full, because
  the broker's copy no longer matches our hashes;
- 5xx, 429 and network failures: retried in this flush with exponential backoff and full
  jitter (tenacity) until the flush's deadline, then left with a persisted next try;
- 401/403: left in place with a persisted next try (a key or school problem, never the
  batch's), and the flush stops.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import tenacity

from agents.config import UploadSettings
from agents.state import AgentState, OutboxEntry
from agents.telemetry import RecentErrors
from agents.uploader import BrokerClient, Outcome, SendResult

log = logging.getLogger("agents.spool")

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


@dataclass
class FlushReport:
    confirmed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
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

    def flush(self, deadline: datetime | None = None) -> FlushReport:
        """Send what is due, oldest first, until the outbox is empty or the deadline passes."""
        report = FlushReport()
        blocked: set[str] = set()
        end = deadline or self._clock() + timedelta(seconds=self._settings.retry_budget_seconds)
        for entry in self._state.pending():
            if entry.area in blocked:
                continue
            now = self._clock()
            if entry.next_attempt_at is not None and entry.next_attempt_at > now:
                blocked.add(entry.area)
                report.deferred.append(entry.batch_id)
                continue
            if now >= end or self._cancelled():
                report.stopped = "deadline" if now >= end else "stopping"
                break
            result = self._send(entry, end)
            if not self._settle(entry, result, report):
                blocked.add(entry.area)
                if _agent_wide(result):
                    report.stopped = result.detail  # the broker, not the batch: stop here
                    break
        return report

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


def _agent_wide(result: SendResult) -> bool:
    """Unreachable, refused key or rate-limited: the other areas would fare no better."""
    return result.status in (None, 401, 403, 429)
