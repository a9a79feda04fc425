"""Agent and data: each agent's heartbeat and errors, each area's freshness, "refresh now"."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from broker.agenthub.admin_actions import confirm_held_deletion, refresh_now
from broker.agenthub.health import school_health
from broker.console.deps import ConsoleContext, ConsoleDep
from broker.console.web import ConsoleRoute, redirect, render

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

REFRESHED = (
    "Your agent has been asked to extract the areas you chose. "
    "It picks up the request with its next heartbeat, within about a minute."
)
DELETION_CONFIRMED = (
    "The deletion will go through once: the agent sends it again with its next extraction."
)
NO_AREA = {"text": "Select at least one area to refresh", "href": "#areas"}


@router.get("/agent")
def agent_page(request: Request, ctx: ConsoleDep) -> Response:
    if request.query_params.get("refreshed") == "1":
        return _page(request, ctx, flash=REFRESHED)
    confirmed = request.query_params.get("deletion") == "confirmed"
    return _page(request, ctx, flash=DELETION_CONFIRMED if confirmed else None)


@router.post("/agent/refresh")
async def refresh_submit(request: Request, ctx: ConsoleDep) -> Response:
    form = await ctx.form(request)
    areas = [a for a in form.getlist("areas") if isinstance(a, str)]
    if not areas:
        return _page(request, ctx, errors=[NO_AREA], status_code=422)
    refresh_now(ctx.admin_ctx, areas)
    return redirect("/school/agent?refreshed=1")


@router.post("/agent/held-deletions/{area}/confirm")
async def confirm_deletion(request: Request, area: str, ctx: ConsoleDep) -> Response:
    await ctx.form(request)
    confirm_held_deletion(ctx.admin_ctx, area)
    return redirect("/school/agent?deletion=confirmed")


def _page(
    request: Request,
    ctx: ConsoleContext,
    *,
    flash: str | None = None,
    errors: list[dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    health = school_health(ctx.admin_ctx, request.app.state.cache, request.app.state.resources)
    return render(
        request,
        "agent.html",
        {
            "title": "Agent and data",
            "agents": [_times(a, "last_heartbeat_at") for a in health["agents"]],
            "areas": [
                _times(a, "as_of", "expires_at", "refresh_requested_at") for a in health["areas"]
            ],
            "commands": [_times(c, "created_at", "completed_at") for c in health["commands"]],
            "held": health.get("held_deletions", []),
            "silent_after_minutes": health["silent_after_seconds"] // 60,
            "flash": flash,
            "errors": errors or [],
        },
        status_code=status_code,
    )


def _times(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The API's RFC 3339 strings as instants, for the page to write the GOV.UK way."""
    return {**item, **{k: datetime.fromisoformat(item[k]) if item[k] else None for k in keys}}
