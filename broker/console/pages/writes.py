"""Writes: what partners asked the agent to write to the MIS, and cancelling a queued one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from broker.console.deps import ConsoleContext, ConsoleDep
from broker.console.web import ConsoleRoute, redirect, render
from broker.writes.routes import cancel_write, school_writes

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

CANCELLED = "The write was cancelled: your agent will not apply it, and the partner is told."


@router.get("/writes")
def writes_page(request: Request, ctx: ConsoleDep) -> Response:
    cancelled = request.query_params.get("cancelled") == "1"
    return _page(request, ctx, flash=CANCELLED if cancelled else None)


@router.post("/writes/{write_id}/cancel")
async def cancel_submit(request: Request, write_id: str, ctx: ConsoleDep) -> Response:
    await ctx.form(request)
    cancel_write(ctx.admin_ctx, write_id)
    return redirect("/school/writes?cancelled=1")


def _page(request: Request, ctx: ConsoleContext, *, flash: str | None = None) -> Response:
    writes = [_times(w) for w in school_writes(ctx.admin_ctx, None)]
    return render(request, "writes.html", {"title": "Writes", "writes": writes, "flash": flash})


def _times(item: dict[str, Any]) -> dict[str, Any]:
    keys = ("created_at", "updated_at", "expires_at")
    return {**item, **{k: datetime.fromisoformat(item[k]) for k in keys}}
