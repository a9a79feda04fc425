"""`misbroker-agent`: the on-prem agent's command line.

    misbroker-agent [--config FILE] run              # forever: heartbeat, schedules, outbox
    misbroker-agent [--config FILE] once             # one cycle, then send the whole outbox
    misbroker-agent [--config FILE] extract AREA... [--full]
    misbroker-agent [--config FILE] status           # state and outbox, as JSON
    misbroker-agent [--config FILE] check            # config, MIS and broker reachable

Exit codes: 0 fine; 1 work left (outbox not empty, broker unreachable, an area failed);
2 bad configuration or usage.  Logs are JSON lines on stderr; the agent key never appears.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from agents import __version__
from agents.config import AgentConfig, ConfigError, load_config
from agents.inspect import inspect_mis
from agents.logs import configure as configure_logging
from agents.mis.base import AdapterError
from agents.runner import RESTART, Agent
from agents.state import AgentState, iso
from agents.telemetry import quarantined
from agents.uploader import BrokerError
from consent.areas import CATALOGUE

EXIT_OK: Final = 0
EXIT_PENDING: Final = 1
EXIT_CONFIG: Final = 2
# `run` returns this when the broker asked for a restart; `run()` then re-executes.
EXIT_RESTART: Final = 75


def default_config_path() -> Path:
    env = os.environ.get("MISBROKER_AGENT_CONFIG")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData"))
        return base / "misbroker-agent" / "agent.toml"
    return Path("/etc/misbroker-agent/agent.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="misbroker-agent",
        description="Extract this school's MIS and keep the misbroker cache up to date.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $MISBROKER_AGENT_CONFIG or the system location)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run until stopped: heartbeat, schedules, outbox")
    sub.add_parser("once", help="one cycle of all due work, then send the outbox")
    extract = sub.add_parser("extract", help="extract the given areas now and send them")
    extract.add_argument("areas", nargs="+", metavar="AREA")
    extract.add_argument("--full", action="store_true", help="send a full upload")
    sub.add_parser("status", help="print the local state and outbox as JSON")
    sub.add_parser("check", help="check the config, the MIS and that the broker answers")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code) if isinstance(exc.code, int) else EXIT_CONFIG
    try:
        config = load_config(args.config or default_config_path())
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    configure_logging(args.log_level, secrets=[config.agent_key.reveal()])
    if args.command == "status":
        return _status(config)
    try:
        agent = _agent(config)
    except ConfigError as exc:
        return _fail(f"config error: {exc}")
    except AdapterError as exc:
        return _fail(f"MIS error: {exc}", EXIT_PENDING)
    try:
        return _dispatch(agent, args)
    finally:
        agent.close()


def run() -> None:
    """The console-script entry point."""
    code = main()
    if code == EXIT_RESTART:
        _reexec()
    sys.exit(code)


def _reexec() -> None:
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606


def _agent(config: AgentConfig) -> Agent:
    from agents.mis.registry import build_adapter

    adapter = build_adapter(config.mis, config.state_dir)
    return Agent(config, adapter, AgentState.open(config.state_dir))


def _dispatch(agent: Agent, args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(agent)
    if args.command == "once":
        dead_before = agent.state.dead_letter_count()
        agent.run_once()
        failed = any(s.last_ok is False for s in agent.state.areas().values())
        dead = agent.state.dead_letter_count() > dead_before
        return EXIT_PENDING if agent.state.pending() or failed or dead else EXIT_OK
    if args.command == "extract":
        unknown = [a for a in args.areas if a not in CATALOGUE]
        if unknown:
            return _fail(f"unknown area(s): {', '.join(unknown)}")
        ok, summary = agent.extract_areas(list(dict.fromkeys(args.areas)), full=args.full)
        _print({"ok": ok, "summary": summary, "outbox": len(agent.state.pending())})
        return EXIT_OK if ok and not agent.state.pending() else EXIT_PENDING
    return _check(agent)


def _run(agent: Agent) -> int:
    def _stop(signum: int, _frame: Any) -> None:
        agent.stopping.set()  # ends the loop and any backoff wait; the outbox keeps the rest

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _stop)
    outcome = agent.run_forever(agent.stopping)
    return EXIT_RESTART if outcome == RESTART else EXIT_OK


def _check(agent: Agent) -> int:
    """Config, the whole MIS read (nothing uploaded) and the broker; 1 if any of them fails."""
    out: dict[str, Any] = {"config": "ok", "mis": agent.adapter.name}
    report = inspect_mis(agent.adapter)
    out.update(report.as_json())
    try:
        out["broker"] = agent.client().healthz()
    except BrokerError as exc:
        out["broker_error"] = str(exc)
        _print(out)
        return EXIT_PENDING
    _print(out)
    return EXIT_OK if report.ok else EXIT_PENDING


def _status(config: AgentConfig) -> int:
    state = AgentState.open(config.state_dir)
    try:
        pending = state.pending()
        _print(
            {
                "broker_url": config.broker_url,
                "mis": config.mis.adapter,
                "state_dir": str(config.state_dir),
                "areas": {
                    area: {
                        "last_extracted_at": _maybe_iso(s.last_extracted_at),
                        "last_full_at": _maybe_iso(s.last_full_at),
                        "last_confirmed_at": _maybe_iso(s.last_confirmed_at),
                        "ok": s.last_ok,
                        "records": s.last_records,
                        "error": s.last_error,
                        "needs_full": s.needs_full,
                    }
                    for area, s in state.areas().items()
                },
                "outbox": [
                    {
                        "batch_id": e.batch_id,
                        "area": e.area,
                        "mode": e.mode,
                        "records": e.records,
                        "deleted": e.deleted,
                        "bytes": e.size,
                        "attempts": e.attempts,
                        "last_error": e.last_error,
                    }
                    for e in pending
                ],
                "dead_letters": state.dead_letter_count(),
                "held_deletions": [
                    {"area": h.area, "records": h.records, "deleting": h.deleting}
                    for h in state.held_deletions()
                ],
                "quarantined": quarantined(state),
                # The broker's limit shows only once it refused a batch as too large.
                "batch_limit_bytes": {
                    "configured": config.upload.max_batch_bytes,
                    "broker": state.upload_limit(),
                },
                "unreported_commands": [c.id for c in state.unreported_commands()],
            }
        )
    finally:
        state.close()
    return EXIT_OK


def _maybe_iso(value: Any) -> str | None:
    return iso(value) if value is not None else None


def _print(payload: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    sys.stderr.write(f"misbroker-agent: {message}\n")
    return code


if __name__ == "__main__":
    run()
