"""A school's agent and data health: what `GET /v1/admin/agent` and the console both show."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from broker.admin.deps import AdminContext
from broker.agenthub.commands import HISTORY_PAGE
from broker.agenthub.heartbeat import agent_health
from broker.clock import rfc3339
from broker.resources import Resources
from cache.service import AreaView, CacheService


def school_health(
    ctx: AdminContext,
    cache: CacheService,
    resources: Resources,
    command_limit: int = HISTORY_PAGE,
) -> dict[str, Any]:
    """Every agent's heartbeat and errors, every cached area's freshness, the latest commands."""
    areas = [area_view(v) for v in cache.area_states(ctx.session, ctx.school.id, ctx.now)]
    minutes = resources.settings.broker.agent_silent_after_minutes
    return agent_health(
        ctx.session,
        school_id=ctx.school.id,
        now=ctx.now,
        silent_after=timedelta(minutes=minutes),
        area_states=areas,
        command_limit=command_limit,
    )


def area_view(view: AreaView) -> dict[str, Any]:
    def t(value: Any) -> str | None:
        return rfc3339(value) if value is not None else None

    return {
        "area": view.area,
        "as_of": t(view.as_of),
        "stale": view.stale,
        "expires_at": t(view.expires_at),
        "tier": view.tier.value,
        "records": view.record_count,
        "last_read_at": t(view.last_read_at),
        "refresh_requested_at": t(view.refresh_requested_at),
    }
