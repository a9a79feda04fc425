"""School admin API, the agent part: its health and "refresh now"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from broker.admin.deps import AdminDep
from broker.agenthub import admin_actions
from broker.agenthub.commands import HISTORY_MAX, HISTORY_PAGE
from broker.agenthub.health import school_health
from broker.deps import get_batch_applier, get_resources
from broker.resources import Resources
from cache.service import CacheService

router = APIRouter(prefix="/v1/admin", tags=["school admin"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
AUTH: dict[int | str, dict[str, Any]] = {401: PROBLEM, 403: PROBLEM}


class RefreshIn(BaseModel):
    areas: list[str] = Field(min_length=1, max_length=32)


class RefreshOut(BaseModel):
    command_id: str
    status: str
    areas: list[str]


@router.get("/agent", summary="My school's agent: heartbeat, telemetry, data as of", responses=AUTH)
def get_agent_health(
    ctx: AdminDep,
    cache: Annotated[CacheService, Depends(get_batch_applier)],
    resources: Annotated[Resources, Depends(get_resources)],
    limit: Annotated[
        int, Query(ge=1, le=HISTORY_MAX, description="How many of the latest commands")
    ] = HISTORY_PAGE,
) -> dict[str, Any]:
    return school_health(ctx, cache, resources, limit)


@router.post(
    "/refresh",
    status_code=202,
    response_model=RefreshOut,
    summary="Ask my school's agent to extract these areas now",
    responses={**AUTH, 409: PROBLEM, 422: PROBLEM},
)
def refresh_now(body: RefreshIn, ctx: AdminDep) -> RefreshOut:
    command = admin_actions.refresh_now(ctx, body.areas)
    return RefreshOut(
        command_id=command.id, status=command.status.value, areas=command.args["areas"]
    )


@router.post(
    "/agent/held-deletions/{area}/confirm",
    summary="Let a held mass deletion of this area go through, once",
    responses={**AUTH, 404: PROBLEM, 409: PROBLEM},
)
def confirm_held_deletion(area: str, ctx: AdminDep) -> dict[str, Any]:
    return admin_actions.confirm_held_deletion(ctx, area)
