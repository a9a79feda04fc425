"""`misbroker status`: one screen on a running deployment, for a person (or `--json`)."""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta
from typing import Annotated, Any

import httpx
import psutil
import typer

from broker.cli.context import CliState, emit
from broker.ops import summary
from broker.settings import Settings

PROBE_SECONDS = 3.0


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Processes, queue depth, schools, silent agents, stale areas, webhooks, access-log rate."""
    cli = ctx.find_root().obj
    assert isinstance(cli, CliState)
    settings = cli.settings
    res = cli.resources()
    now = res.clock.now()
    out: dict[str, Any] = {"checked_at": now.isoformat()}
    out["processes"] = _processes(settings, now)
    out["queue_depth"] = _queue_depth(settings)
    silent_after = timedelta(minutes=settings.broker.agent_silent_after_minutes)
    with res.engine.connect() as conn:
        out["schools"] = summary.schools_by_status(conn)
        silent, agents = summary.silent_agents(conn, now, silent_after)
        out["agents"] = {"silent": silent, "total": agents}
        stale, cached = summary.stale_areas(conn, now)
        out["areas"] = {"stale": stale, "cached": cached}
        hooks = summary.webhook_health(conn, now)
        out["webhooks"] = {"retrying": hooks.retrying, "failed_last_day": hooks.failed_last_day}
        window = summary.ACCESS_RATE_WINDOW
        entries = summary.access_log_entries_since(conn, now - window)
        out["access_log"] = {
            "entries": entries,
            "window_seconds": int(window.total_seconds()),
            "per_minute": round(entries / (window.total_seconds() / 60), 1),
        }
    emit(as_json, out, _human(out, silent_after))


def _processes(settings: Settings, now: datetime) -> dict[str, Any]:
    """The supervisor (embedded), the API's readiness and the worker/beat heartbeat."""
    procs: dict[str, Any] = {}
    url = settings.public_url
    lock = settings.run_dir / "up.lock"
    holder = lock.read_text().strip() if lock.exists() else ""
    if holder:
        pid_text, _, lock_url = holder.partition(", ")
        pid = int(pid_text.removeprefix("pid ")) if pid_text.startswith("pid ") else None
        procs["up"] = {"pid": pid, "running": pid is not None and psutil.pid_exists(pid)}
        url = lock_url or url
    procs["api"] = {"url": url, "ready": _ready(url, settings)}
    procs["worker_and_beat"] = _heartbeat(settings, now)
    return procs


def _ready(url: str, settings: Settings) -> bool:
    verify: ssl.SSLContext | bool = True
    if url.startswith("https://") and settings.broker.tls_cert_file is not None:
        verify = ssl.create_default_context(cafile=settings.broker.tls_cert_file)
    try:
        return httpx.get(f"{url}/readyz", timeout=PROBE_SECONDS, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def _heartbeat(settings: Settings, now: datetime) -> dict[str, Any]:
    age = None
    if not settings.embedded_redis or settings.embedded_redis_socket.exists():
        age = summary.probe(settings.redis_url, lambda c: summary.heartbeat_age(c, now))
    # The heartbeat is scheduled every 30 s and lives 300 s: two missed beats is dead.
    return {
        "alive": age is not None and age < 90,
        "seconds_since_heartbeat": None if age is None else int(age),
    }


def _queue_depth(settings: Settings) -> int | None:
    if settings.embedded_redis and not settings.embedded_state_redis_socket.exists():
        return None
    return summary.probe(summary.queue_redis_url(settings.celery_broker_url), summary.queue_depth)


def _human(out: dict[str, Any], silent_after: timedelta) -> str:
    procs = out["processes"]
    parts = []
    if "up" in procs:
        up = procs["up"]
        parts.append(f"up pid {up['pid']} {'running' if up['running'] else 'GONE'}")
    api = procs["api"]
    parts.append(f"api {'ready' if api['ready'] else 'NOT READY'} at {api['url']}")
    beat = procs["worker_and_beat"]
    age = beat["seconds_since_heartbeat"]
    parts.append(
        f"worker and beat: heartbeat {age} s ago"
        if beat["alive"]
        else "worker and beat: NO HEARTBEAT" + (f" for {age} s" if age is not None else "")
    )
    depth = out["queue_depth"]
    schools = out["schools"]
    agents, areas, hooks, log = out["agents"], out["areas"], out["webhooks"], out["access_log"]
    minutes = int(silent_after.total_seconds() // 60)
    rows = [
        ("processes", " · ".join(parts)),
        ("queue", "unreachable" if depth is None else f"{depth} task(s) waiting"),
        (
            "schools",
            ", ".join(f"{n} {s}" for s, n in sorted(schools.items())) or "none registered",
        ),
        ("agents", f"{agents['silent']} of {agents['total']} silent (>{minutes} min)"),
        ("areas", f"{areas['stale']} of {areas['cached']} cached areas stale"),
        (
            "webhooks",
            f"{hooks['retrying']} failing and retrying, {hooks['failed_last_day']} gave up in 24 h",
        ),
        (
            "access log",
            f"{log['entries']} entries in the last {log['window_seconds'] // 60} min"
            f" ({log['per_minute']}/min)",
        ),
    ]
    return "\n".join(f"{name:<11} {text}" for name, text in rows)
