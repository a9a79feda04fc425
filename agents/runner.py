"""The agent's loop: heartbeat and commands, scheduled extractions, then the outbox.

Everything happens in one thread, in this order, each cycle (`run_once`), so an extraction
never races an upload of the same area.  `run_forever` repeats cycles until stopped, or
returns `RESTART` when the broker asked for one (the CLI then re-executes the process).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx

from agents.commands import CommandRunner
from agents.config import AgentConfig, merge, parse_config, read_overrides, write_overrides
from agents.extract import Extraction, Extractor
from agents.mis.base import MisAdapter
from agents.progress import on_terminal, progress
from agents.scheduler import Due, due, wants_full
from agents.spool import FlushReport, Spool
from agents.state import AgentState, AreaStatus, parse_iso
from agents.telemetry import RecentErrors, collect
from agents.uploader import BrokerClient, BrokerError
from agents.writeback import WriteRunner

log = logging.getLogger("agents.runner")

RESTART: Final = "restart"
STOPPED: Final = "stopped"
MAX_TICK_SECONDS: Final = 30.0
CLOCK_SKEW_WARNING: Final = timedelta(minutes=2)
COMMAND_MEMORY: Final = timedelta(days=7)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        adapter: MisAdapter,
        state: AgentState,
        *,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.state = state
        self.errors = RecentErrors()
        # Set to stop: backoff waits end at once and the outbox keeps what is unsent.
        self.stopping = threading.Event()
        self._clock = clock
        self._transport = transport
        self._client = self._build_client()
        self._restart = False
        self._last_heartbeat: datetime | None = None
        self.extractor = Extractor(
            adapter,
            state,
            clock=clock,
            errors=self.errors,
            max_batch_bytes=config.upload.max_batch_bytes,
            deletion_limit=config.upload.deletion_limit,
            invalid_limit=config.mis.invalid_limit,
        )
        self.spool = Spool(
            state,
            self.client,
            config.upload,
            clock=clock,
            sleep=sleep or self._interruptible_sleep,
            errors=self.errors,
            rng=rng,
            cancelled=self.stopping.is_set,
        )
        self.commands = CommandRunner(state, self, self.client, clock)
        self.writes = WriteRunner(state, adapter, self.client, clock, self.errors, self)

    def __repr__(self) -> str:
        return f"Agent({self.config.broker_url!r}, mis={self.adapter.name!r})"

    def _interruptible_sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def client(self) -> BrokerClient:
        return self._client

    def _build_client(self) -> BrokerClient:
        return BrokerClient(
            self.config.broker_url,
            self.config.agent_key.reveal(),
            tls=self.config.tls_context() if self.config.broker_url.startswith("https:") else None,
            timeout=self.config.upload.timeout_seconds,
            transport=self._transport,
        )

    def close(self) -> None:
        self._client.close()
        self.state.close()

    # --- one cycle -----------------------------------------------------------------------

    def run_once(self, *, flush_deadline: datetime | None = None) -> str | None:
        """Heartbeat if due, extract what is due, send the outbox; RESTART if asked to."""
        now = self._clock()
        if self._heartbeat_due(now):
            self.heartbeat()
        due_now = self.due_now()
        with progress(len(due_now), "extract", "area") as bar:
            for item in due_now:
                bar.set_postfix_str(item.area, refresh=False)
                self.extract(item.area, full=item.full)
                bar.update()
        self.flush(flush_deadline)
        return RESTART if self._restart else None

    def run_forever(self, stop: threading.Event) -> str:
        log.info("agent running", extra={"fields": {"broker": self.config.broker_url}})
        while not stop.is_set():
            next_beat = self._next_heartbeat()
            try:
                outcome = self.run_once(
                    flush_deadline=max(next_beat, self._clock() + timedelta(seconds=10))
                )
            except Exception as exc:  # a disk or database error: report, keep the loop alive
                log.exception("agent cycle failed")
                self.errors.add(f"agent cycle failed: {type(exc).__name__}", self._clock())
                outcome = None
            if outcome == RESTART:
                return RESTART
            wait = (self._next_heartbeat() - self._clock()).total_seconds()
            stop.wait(min(MAX_TICK_SECONDS, max(1.0, wait)))
        return STOPPED

    def due_now(self) -> list[Due]:
        now = self._clock()
        return due(
            now,
            self.config.schedules,
            self.state.areas(),
            available=self.adapter.areas(),
            jitter_seed=self.config.agent_key.jitter_seed(),
            tz=self.timezone(now),
        )

    def timezone(self, now: datetime) -> tzinfo:
        if self.config.timezone:
            return ZoneInfo(self.config.timezone)
        local = now.astimezone().tzinfo
        return local if local is not None else UTC

    def extract(self, area: str, *, full: bool = False, confirmed: bool = False) -> Extraction:
        now = self._clock()
        status = self.state.area(area) or AreaStatus(area)
        weekly = self.config.schedules.weekly_full_day
        full = full or wants_full(now, status, weekly, self.timezone(now))
        return self.extractor.extract(area, full=full, confirmed=confirmed)

    def flush(self, deadline: datetime | None = None) -> FlushReport:
        # The outbox is counted only for a bar someone will see.
        total = len(self.state.pending()) if on_terminal() else None
        with progress(total, "upload", "batch") as bar:
            report = self.spool.flush(deadline, on_settled=bar.update)
        if report.stopped:
            log.warning("outbox not emptied", extra={"fields": {"reason": report.stopped}})
        return report

    # --- heartbeat -----------------------------------------------------------------------

    def heartbeat(self) -> None:
        now = self._clock()
        self._last_heartbeat = now
        self.commands.report_pending()
        telemetry = collect(self.state, mis=self.adapter.name, errors=self.errors, now=now)
        telemetry["capabilities"] = self.writes.capabilities()
        try:
            reply = self._client.heartbeat(telemetry)
        except BrokerError as exc:
            self.errors.add(f"heartbeat failed: {exc}", now)
            log.warning("heartbeat failed", extra={"fields": {"error": str(exc)}})
            return
        self._check_skew(reply.get("server_time"), now)
        for command in reply.get("commands") or []:
            if isinstance(command, dict):
                self.commands.handle(command)
        offers = reply.get("writes")
        if isinstance(offers, list):
            self.writes.handle([o for o in offers if isinstance(o, dict)])
        self.state.forget_commands_before(now - COMMAND_MEMORY)
        self.state.forget_writes_before(now - COMMAND_MEMORY)

    def _heartbeat_due(self, now: datetime) -> bool:
        return self._last_heartbeat is None or now >= self._next_heartbeat()

    def _next_heartbeat(self) -> datetime:
        if self._last_heartbeat is None:
            return self._clock()
        return self._last_heartbeat + timedelta(seconds=self.config.heartbeat_seconds)

    def _check_skew(self, server_time: object, now: datetime) -> None:
        server = parse_iso(server_time) if isinstance(server_time, str) else None
        if server is not None and abs(server - now) > CLOCK_SKEW_WARNING:
            seconds = int((now - server).total_seconds())
            self.errors.add(f"clock skew: this machine is {seconds}s off the broker", now)

    # --- what commands can do (AgentOps) ---------------------------------------------------

    def available_areas(self) -> frozenset[str]:
        return self.adapter.areas()

    def extract_areas(
        self, areas: Sequence[str], *, full: bool, confirm_deletion: bool = False
    ) -> tuple[bool, str]:
        results = []
        with progress(len(areas), "extract", "area") as bar:
            for area in areas:
                bar.set_postfix_str(area, refresh=False)
                results.append(self.extract(area, full=full, confirmed=confirm_deletion))
                bar.update()
        report = self.flush()
        sent = "uploaded" if report.clean else f"upload pending ({report.stopped or 'retrying'})"
        summary = "; ".join(r.describe() for r in results) + f"; {sent}"
        return all(r.ok for r in results), summary[:1900]

    def reconnect(self) -> None:
        self._client.reconnect()

    def request_restart(self) -> None:
        self._restart = True

    def configure(self, changes: Mapping[str, Any]) -> str:
        overrides = merge(read_overrides(self.config.state_dir), changes)
        updated = parse_config(merge(self.config.raw, changes), self.config.base_dir)
        write_overrides(self.config.state_dir, overrides)
        self.config = updated
        return f"applied {', '.join(sorted(changes))}"
