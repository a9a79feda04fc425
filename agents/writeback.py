"""Write-back at the school: apply partners' writes to the MIS exactly once.

The protocol (see agents/README.md, "Write-back"):

1. The heartbeat reports `capabilities.write_areas` (what the MIS adapter can write); the
   broker queues writes only for those areas.  Its reply names waiting writes in `writes`.
2. For each, the agent fetches the records (`GET /v1/agent/writes/{id}`; the broker marks
   it delivered).  409 means it was cancelled or expired meanwhile: nothing is applied.
3. Records go to the adapter's write port with the key `<write_id>:<index>`; each outcome
   is journalled in the state database as soon as the adapter yields it.
4. The per-record results go to `POST /v1/agent/writes/{id}/results`; then the area is
   extracted and uploaded, so partners see the change (and get `data.updated`).

Exactly once: a record is given to the adapter only if the journal has no outcome for it.
A crash between the MIS taking a record and the journal noting it is covered by the
adapter, which applies a key at most once and answers the same again.  A write the broker
names again after its results were delivered is reported again, never applied again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from agents.mis.base import AdapterError, MisAdapter, WriteRecord, WritingAdapter, write_areas
from agents.state import AgentState
from agents.telemetry import RecentErrors
from agents.uploader import BrokerClient, BrokerError

log = logging.getLogger("agents.writeback")

REPORTED: Final = "reported"
WITHDRAWN: Final = "withdrawn"  # cancelled or expired at the broker before we fetched it


class Extracts(Protocol):
    def extract_areas(
        self, areas: Sequence[str], *, full: bool, confirm_deletion: bool = False
    ) -> tuple[bool, str]: ...


class WriteRunner:
    def __init__(
        self,
        state: AgentState,
        adapter: MisAdapter,
        client: Callable[[], BrokerClient],
        clock: Callable[[], datetime],
        errors: RecentErrors,
        extracts: Extracts,
    ) -> None:
        self._state = state
        self._adapter = adapter
        self._client = client
        self._clock = clock
        self._errors = errors
        self._extracts = extracts

    def capabilities(self) -> dict[str, Any]:
        return {"write_areas": sorted(write_areas(self._adapter))}

    def handle(self, offers: Sequence[Mapping[str, Any]]) -> list[str]:
        """Apply and report every offered write; the areas that changed in the MIS."""
        changed: list[str] = []
        for offer in offers:
            write_id, area = str(offer.get("write_id", "")), str(offer.get("area", ""))
            if not write_id or not area:
                continue
            try:
                if self._one(write_id, area):
                    changed.append(area)
            except BrokerError as exc:  # the next heartbeat names the write again
                self._errors.add(f"write {write_id}: {exc}", self._clock())
                log.warning("write not completed", extra={"fields": {"id": write_id}})
        areas = sorted(set(changed))
        if areas:
            ok, summary = self._extracts.extract_areas(areas, full=False)
            log.info("extracted after writes", extra={"fields": {"ok": ok, "summary": summary}})
        return areas

    def _one(self, write_id: str, area: str) -> bool:
        """True if the MIS may have changed."""
        outcomes = self._state.write_outcomes(write_id)
        finished = self._state.write_finished(write_id)
        if finished == WITHDRAWN:
            return False
        if finished == REPORTED:  # the broker missed our report's answer: report again
            self._report(write_id, area, outcomes)
            return False
        try:
            body = self._client().fetch_write(write_id)
        except BrokerError as exc:
            if exc.status in (404, 409):
                self._state.finish_write(write_id, area, WITHDRAWN, now=self._clock())
                log.info("write withdrawn", extra={"fields": {"id": write_id}})
                return False
            raise
        records = body.get("records")
        if not isinstance(records, list):
            raise BrokerError("write body without records")
        pending = [
            WriteRecord(f"{write_id}:{i}", i, r if isinstance(r, dict) else {})
            for i, r in enumerate(records)
            if i not in outcomes
        ]
        if pending:
            self._apply(write_id, area, pending)
        outcomes = self._state.write_outcomes(write_id)
        self._report(write_id, area, outcomes)
        return True

    def _apply(self, write_id: str, area: str, pending: list[WriteRecord]) -> None:
        adapter = self._adapter
        if not isinstance(adapter, WritingAdapter) or area not in adapter.write_areas():
            for item in pending:
                self._state.journal_write_outcome(
                    write_id, item.index, "rejected", None, f"this MIS cannot write {area}"
                )
            return
        try:
            for outcome in adapter.apply_write(area, write_id, pending):
                self._state.journal_write_outcome(
                    write_id, outcome.index, outcome.status, outcome.mis_id, outcome.error
                )
        except AdapterError as exc:
            # The MIS failed as a whole: what it had taken is journalled; the rest is
            # tried again with the next heartbeat (the broker names the write again).
            self._errors.add(f"write {write_id}: MIS error: {exc}", self._clock())
            raise BrokerError(f"MIS error: {exc}") from None

    def _report(
        self, write_id: str, area: str, outcomes: Mapping[int, tuple[str, str | None, str | None]]
    ) -> None:
        results = [
            {"index": i, "status": s, "mis_id": m, "error": e}
            for i, (s, m, e) in sorted(outcomes.items())
        ]
        try:
            self._client().report_write(write_id, results)
        except BrokerError as exc:
            if exc.status not in (404, 409, 422):
                raise
            # The broker will never take these results (it finished the write otherwise).
            log.error("write results refused", extra={"fields": {"id": write_id}})
        self._state.finish_write(write_id, area, REPORTED, now=self._clock())
