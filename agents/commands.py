"""Commands the broker queues for the agent: run each, remember it, report its result.

The broker re-sends a command whose result it has not received within ten minutes, so an
id already completed here is not run again: its stored result is reported again.  A
result that could not be delivered is kept and reported with the next heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from agents import __version__
from agents.config import CONFIGURABLE_KEYS, ConfigError
from agents.state import AgentState, CompletedCommand
from agents.uploader import BrokerClient, BrokerError
from consent.areas import CATALOGUE

log = logging.getLogger("agents.commands")
KINDS: Final = ("extract", "reconnect", "restart", "check_update", "configure")


class AgentOps(Protocol):
    """What commands need from the running agent."""

    def available_areas(self) -> frozenset[str]: ...

    def extract_areas(
        self, areas: Sequence[str], *, full: bool, confirm_deletion: bool = False
    ) -> tuple[bool, str]:
        """Extract, spool and try to send; (all extracted, a one-line summary).

        `confirm_deletion`: an admin or operator confirmed these areas' held deletions.
        """
        ...

    def reconnect(self) -> None: ...

    def request_restart(self) -> None: ...

    def configure(self, changes: Mapping[str, Any]) -> str:
        """Apply and persist; raises `ConfigError` for a value that does not validate."""
        ...


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    kind: str
    args: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Command:
        args = raw.get("args")
        return cls(
            str(raw.get("id", "")), str(raw.get("kind", "")), args if isinstance(args, dict) else {}
        )


class CommandFailedError(Exception):
    """The command could not be carried out; the message is its result detail."""


class CommandRunner:
    def __init__(
        self,
        state: AgentState,
        ops: AgentOps,
        client: Callable[[], BrokerClient],
        clock: Callable[[], datetime],
    ) -> None:
        self._state = state
        self._ops = ops
        self._client = client
        self._clock = clock

    def handle(self, raw: Mapping[str, Any]) -> CompletedCommand:
        command = Command.parse(raw)
        done = self._state.completed_command(command.id)
        if done is None:
            status, detail = self._run(command)
            done = self._state.complete_command(
                command.id, kind=command.kind, status=status, detail=detail, now=self._clock()
            )
            log.info(
                "command completed",
                extra={"fields": {"id": command.id, "kind": command.kind, "status": status}},
            )
            if command.kind == "restart" and status == "done":
                self._ops.request_restart()
        else:
            log.info(
                "command already completed; reporting again", extra={"fields": {"id": command.id}}
            )
        self._report(done)
        return done

    def report_pending(self) -> None:
        for done in self._state.unreported_commands():
            self._report(done)

    def _report(self, done: CompletedCommand) -> None:
        try:
            self._client().report(done.id, done.status, done.detail)
        except BrokerError as exc:
            if exc.retryable or exc.status in (401, 403):
                log.warning(
                    "command result not delivered; will retry",
                    extra={"fields": {"id": done.id, "error": str(exc)}},
                )
                return
            # 404/409/422: the broker will never take this result; stop offering it.
            log.error(
                "command result refused", extra={"fields": {"id": done.id, "error": str(exc)}}
            )
        self._state.command_reported(done.id)

    def _run(self, command: Command) -> tuple[str, str]:
        handler = {
            "extract": self._extract,
            "reconnect": self._reconnect,
            "restart": self._restart,
            "check_update": self._check_update,
            "configure": self._configure,
        }.get(command.kind)
        if handler is None:
            return "failed", f"unknown command kind {command.kind!r}; known: {', '.join(KINDS)}"
        try:
            return "done", handler(command.args)
        except CommandFailedError as exc:
            return "failed", str(exc)
        except Exception as exc:  # a command must never take the agent down
            log.exception("command crashed", extra={"fields": {"id": command.id}})
            return "failed", f"agent error: {type(exc).__name__}"

    def _extract(self, args: Mapping[str, Any]) -> str:
        areas = args.get("areas")
        if not isinstance(areas, list) or not areas or not all(isinstance(a, str) for a in areas):
            raise CommandFailedError("args.areas: expected a non-empty list of area names")
        unknown = [a for a in areas if a not in CATALOGUE]
        if unknown:
            raise CommandFailedError(f"unknown area(s): {', '.join(unknown)}")
        missing = [a for a in areas if a not in self._ops.available_areas()]
        if missing:
            raise CommandFailedError(f"this MIS does not provide: {', '.join(missing)}")
        full, confirm = args.get("full", False), args.get("confirm_deletion", False)
        if not isinstance(full, bool) or not isinstance(confirm, bool):
            raise CommandFailedError("args.full, args.confirm_deletion: expected true or false")
        ok, summary = self._ops.extract_areas(
            list(dict.fromkeys(areas)), full=full, confirm_deletion=confirm
        )
        if not ok:
            raise CommandFailedError(summary)
        return summary

    def _reconnect(self, args: Mapping[str, Any]) -> str:
        self._ops.reconnect()
        return "HTTP connections dropped and rebuilt"

    def _restart(self, args: Mapping[str, Any]) -> str:
        return "restarting after this cycle (state flushed)"

    def _check_update(self, args: Mapping[str, Any]) -> str:
        return f"misbroker-agent {__version__}; no update channel is configured"

    def _configure(self, args: Mapping[str, Any]) -> str:
        unknown = sorted(set(args) - CONFIGURABLE_KEYS)
        if unknown or not args:
            raise CommandFailedError(
                f"cannot configure {', '.join(unknown) or 'nothing'}; allowed: "
                + ", ".join(sorted(CONFIGURABLE_KEYS))
            )
        try:
            return self._ops.configure(args)
        except ConfigError as exc:
            raise CommandFailedError(str(exc)) from None
