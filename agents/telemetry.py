"""What the agent reports each heartbeat: version, host health, per-area extraction, errors.

Error strings name areas, batch ids, record ids and fields, never record contents, so the
telemetry the broker stores holds no personal data.
"""

from __future__ import annotations

import platform
import sys
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import psutil

from agents import __version__
from agents.quarantine import MAX_REPORTED
from agents.state import AgentState, AreaStatus, iso

MAX_ERRORS: Final = 20
MAX_ERROR_CHARS: Final = 300
ERROR_MAX_AGE: Final = timedelta(hours=24)


class RecentErrors:
    """The last few errors, each stamped; older than a day they stop being reported."""

    def __init__(self, limit: int = MAX_ERRORS) -> None:
        self._items: deque[tuple[datetime, str]] = deque(maxlen=limit)

    def add(self, message: str, now: datetime) -> None:
        self._items.append((now, message[:MAX_ERROR_CHARS]))

    def items(self, now: datetime) -> list[str]:
        return [f"{iso(at)} {text}" for at, text in self._items if now - at <= ERROR_MAX_AGE]


def collect(
    state: AgentState,
    *,
    mis: str,
    errors: RecentErrors,
    now: datetime,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One heartbeat body (the broker's `Telemetry`; unknown keys are kept there)."""
    pending = state.pending()
    return {
        "agent_version": __version__,
        "os": platform.platform()[:200],
        "mis": mis,
        "cpu_percent": float(psutil.cpu_percent(interval=None)),
        "memory": memory(),
        "disk": disk(state.path.parent, state.size_bytes()),
        "last_extraction": {
            area: extraction(status) for area, status in sorted(state.areas().items())
        },
        "errors": errors.items(now),
        # Uploads the mass-deletion guard keeps back, until someone confirms (counts only).
        "held_deletions": [
            {
                "area": h.area,
                "records": h.records,
                "deleting": h.deleting,
                "held_at": iso(h.held_at),
            }
            for h in state.held_deletions()
        ],
        # Records left out as invalid: id, field and kind of problem, never the value.
        "quarantined": quarantined(state),
        "python": platform.python_version(),
        "outbox": {
            "batches": len(pending),
            "bytes": sum(e.size for e in pending),
            "oldest_age_seconds": (now - pending[0].created_at).total_seconds() if pending else 0,
            "dead_letters": state.dead_letter_count(),
        },
        **(extra or {}),
    }


def quarantined(state: AgentState) -> dict[str, Any]:
    """Counts per area and the first records, so a heartbeat stays small."""
    return {
        "counts": state.quarantine_counts(),
        "records": [
            {
                "area": q.area,
                "id": q.record_id,
                "field": q.field,
                "problem": q.problem,
                "where": q.where or None,
            }
            for q in state.quarantine(MAX_REPORTED)
        ],
    }


def memory() -> dict[str, float]:
    system = psutil.virtual_memory()
    return {
        "total_bytes": float(system.total),
        "available_bytes": float(system.available),
        "percent": float(system.percent),
        "agent_rss_bytes": float(psutil.Process().memory_info().rss),
    }


def disk(state_dir: Path, state_bytes: int) -> dict[str, float]:
    usage = psutil.disk_usage(str(state_dir))
    return {
        "total_bytes": float(usage.total),
        "free_bytes": float(usage.free),
        "percent": float(usage.percent),
        "state_bytes": float(state_bytes),
    }


def extraction(status: AreaStatus) -> dict[str, Any]:
    at = status.last_attempt_at or status.last_extracted_at
    return {
        "at": iso(at) if at else None,
        "ok": status.last_ok,
        "records": status.last_records,
        "duration_seconds": None
        if status.last_duration is None
        else round(status.last_duration, 3),
        "error": status.last_error[:1000] if status.last_error else None,
    }


def platform_summary() -> str:
    return f"{platform.system()} {platform.release()} / Python {sys.version.split()[0]}"
