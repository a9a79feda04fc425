"""School admin API, the agent part: its health and "refresh now"."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from broker.admin.deps import AdminDep
from broker.agenthub import commands, held
from broker.agenthub.heartbeat import agent_health
from broker.clock import rfc3339
from broker.deps import get_batch_applier, get_resources
from broker.errors import ConflictError
from broker.resources import Resources
from broker.schools.models import SchoolStatus
from cache.service import AreaView, CacheService

router = APIRouter(prefix="/v1/admin", tags=["school admin"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
AUTH: dict[int | str, dict[str, Any]] = {401: PROBLEM, 403: PROBLEM}


class RefreshIn(BaseModel):
    areas: list[str] = Field(min_length=1, max_length=32)


class RefreshOut(BaseModel):
    command_id: str
    status: str
    areas: list[str]


def _area_view(view: AreaView) -> dict[str, Any]:
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


@router.get("/agent", summary="My school's agent: heartbeat, telemetry, data as of", responses=AUTH)
def get_agent_health(
    ctx: AdminDep,
    cache: Annotated[CacheService, Depends(get_batch_applier)],
    resources: Annotated[Resources, Depends(get_resources)],
) -> dict[str, Any]:
    areas = [_area_view(v) for v in cache.area_states(ctx.session, ctx.school.id, ctx.now)]
    minutes = resources.settings.broker.agent_silent_after_minutes
    return agent_health(
        ctx.session,
        school_id=ctx.school.id,
        now=ctx.now,
        silent_after=timedelta(minutes=minutes),
        area_states=areas,
    )


@router.post(
    "/refresh",
    status_code=202,
    response_model=RefreshOut,
    summary="Ask my school's agent to extract these areas now",
    responses={**AUTH, 409: PROBLEM, 422: PROBLEM},
)
def refresh_now(body: RefreshIn, ctx: AdminDep) -> RefreshOut:
    if ctx.school.status is not SchoolStatus.ACTIVE:
        raise ConflictError("this school is closed")
    command = commands.request_extract(
        ctx.session,
        school_id=ctx.school.id,
        areas=body.areas,
        reason=f"{ctx.admin.actor} asked for a refresh",
        now=ctx.now,
    )
    return RefreshOut(
        command_id=command.id, status=command.status.value, areas=command.args["areas"]
    )


@router.post(
    "/agent/held-deletions/{area}/confirm",
    summary="Let a held mass deletion of this area go through, once",
    responses={**AUTH, 404: PROBLEM, 409: PROBLEM},
)
def confirm_held_deletion(area: str, ctx: AdminDep) -> dict[str, Any]:
    if ctx.school.status is not SchoolStatus.ACTIVE:
        raise ConflictError("this school is closed")
    return held.confirm(
        ctx.session, school_id=ctx.school.id, area=area, actor=ctx.admin.actor, now=ctx.now
    )
