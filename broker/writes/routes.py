"""HTTP edge of write-back: the partner's writes, the agent's fetch and results, the
school admin's list and cancel."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from broker.admin.deps import AdminDep
from broker.agenthub.auth import AgentDep
from broker.consent_wiring import RuntimeDep
from broker.db import session_scope
from broker.deps import get_batch_applier, get_resources
from broker.errors import InvalidInputError
from broker.logging import request_id_var
from broker.partners.models import Partner as PartnerRow
from broker.partners.reads import ConsentRequiredError
from broker.resources import Resources
from broker.routers.partner import Partner
from broker.writes import service
from broker.writes.service import NotWritableError
from broker.writes.settings import WriteSettings
from cache.service import CacheService
from consent.access_log import LogEntry
from consent.models import AuditEvent
from consent.repository import ConsentRepository

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ResourcesDep = Annotated[Resources, Depends(get_resources)]
CacheDep = Annotated[CacheService, Depends(get_batch_applier)]

partner_router = APIRouter(prefix="/v1", tags=["partner"])
agent_router = APIRouter(prefix="/v1/agent", tags=["agent"])
admin_router = APIRouter(prefix="/v1/admin", tags=["school admin"])


class WriteRecords(BaseModel):
    records: list[dict[str, Any]] = Field(description="At most 1000 records of the area")


class WriteAccepted(BaseModel):
    write_id: str
    status: Literal["queued"]
    area: str
    count: int


class WriteResult(BaseModel):
    index: int
    status: Literal["applied", "rejected"]
    mis_id: str | None = None
    error: str | None = Field(default=None, max_length=500)


class WriteOut(BaseModel):
    write_id: str
    school_id: str
    area: str
    status: str
    reason: str | None
    count: int
    created_at: str
    updated_at: str
    results: list[WriteResult]


class WriteList(BaseModel):
    data: list[WriteOut]


class AgentResults(BaseModel):
    results: list[WriteResult] = Field(max_length=1000)


def _settings() -> WriteSettings:
    return WriteSettings()


@partner_router.post(
    "/schools/{school_id}/writes/{area}",
    status_code=202,
    response_model=WriteAccepted,
    summary="Queue records for the school's agent to apply to the MIS (write-back)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WriteRecords.model_json_schema()}},
        }
    },
    responses={
        400: PROBLEM,
        401: PROBLEM,
        403: PROBLEM,
        404: PROBLEM,
        409: PROBLEM,
        413: PROBLEM,
        422: PROBLEM,
        429: PROBLEM,
    },
)
async def create_write(
    school_id: str,
    area: str,
    request: Request,
    partner: Partner,
    runtime: RuntimeDep,
    cache: CacheDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    settings = _settings()
    resources = runtime.resources
    key = service.check_key(idempotency_key)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidInputError("the body must be JSON") from None
    records = body.get("records") if isinstance(body, dict) else None
    digest = service.body_digest(area, records if isinstance(records, list) else [])
    now = resources.clock.now()
    rid = request_id_var.get() or ""

    def first_checks() -> tuple[dict[str, Any] | None, str | None]:
        """A replayed answer, or None after the checks that need the database."""
        with session_scope(resources.engine) as session:
            earlier = service.find_by_key(session, partner.partner_id, key)
            if earlier is not None:
                return service.accepted_view(service.replay(earlier, area, digest)), earlier.id
            service.check_writable(area)
            service.active_school(session, school_id)
            return None, None

    replayed, write_id = await run_in_threadpool(first_checks)
    if replayed is not None:
        return _accepted(replayed, write_id or "")
    decision = await runtime.cache.decide(partner.partner_id, school_id, [area], now, "write")
    if not decision.allowed:
        await runtime.access_log.append(
            _entry(school_id, partner.partner_id, area, 0, decision.consent_id, rid, now,
                   decision.reason, allowed=False)
        )  # fmt: skip
        raise ConsentRequiredError(
            f"no consent to write {area} at this school now ({decision.reason})",
            missing_areas=list(decision.missing_areas) or [area],
            reason=decision.reason,
        )

    # A partner writes only about pupils it may see: its audience, less restricted pupils.
    admitted = await run_in_threadpool(
        request.app.state.partner_reads.audiences.resolve,
        school_id, partner.partner_id, decision.audience, now,
    )  # fmt: skip

    def validate() -> list[dict[str, Any]]:
        with session_scope(resources.engine) as session:
            if not service.agent_can_write(session, school_id, area):
                raise NotWritableError(
                    f"the school's agent cannot apply writes of {area} (its MIS adapter does "
                    "not support them, or it has not reported its capabilities yet)"
                )
            return service.validate_records(
                session, cache.keyring, school_id, area, body, settings.max_records, admitted
            )

    valid = await run_in_threadpool(validate)
    # The access-log entry is committed before the write is queued: no log, no write.
    await runtime.access_log.append(
        _entry(school_id, partner.partner_id, area, len(valid), decision.consent_id, rid, now,
               decision.reason, allowed=True)
    )  # fmt: skip

    def queue() -> tuple[dict[str, Any], str]:
        with session_scope(resources.engine) as session:
            earlier = service.find_by_key(session, partner.partner_id, key)
            if earlier is not None:  # a concurrent twin got there first
                return service.accepted_view(service.replay(earlier, area, digest)), earlier.id
            write = service.queue_write(
                session, cache.keyring, school_id=school_id, partner_id=partner.partner_id,
                consent_id=decision.consent_id, area=area, key=key, digest=digest,
                records=valid, now=now, expire_after=settings.expire_after,
            )  # fmt: skip
            return service.accepted_view(write), write.id

    answer, new_id = await run_in_threadpool(queue)
    return _accepted(answer, new_id)


def _accepted(answer: dict[str, Any], write_id: str) -> JSONResponse:
    return JSONResponse(answer, status_code=202, headers={"Location": f"/v1/writes/{write_id}"})


def _entry(
    school_id: str,
    partner_id: str,
    area: str,
    count: int,
    consent_id: str | None,
    request_id: str,
    now: Any,
    reason: str,
    *,
    allowed: bool,
) -> LogEntry:
    return LogEntry(
        school_id=school_id,
        partner_id=partner_id,
        areas=(area,),
        record_count=count,
        decision="allowed" if allowed else "denied",
        reason=reason[:64],
        request_id=request_id[:128],
        at=now,
        consent_id=consent_id,
        operation="write",
    )


@partner_router.get(
    "/writes/{write_id}",
    response_model=WriteOut,
    summary="One of my writes: status and per-record results",
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 429: PROBLEM},
)
async def get_write(write_id: str, partner: Partner, resources: ResourcesDep) -> Any:
    def load() -> dict[str, Any]:
        with session_scope(resources.engine) as session:
            write = service.partner_write(session, partner.partner_id, write_id)
            # The same object as the one expired (the session's identity map), if it was.
            service.expire_due(session, resources.clock.now(), write.school_id)
            return service.write_view(write)

    return await run_in_threadpool(load)


@partner_router.get(
    "/writes",
    response_model=WriteList,
    summary="My writes, newest first",
    responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM, 429: PROBLEM},
)
async def list_my_writes(
    partner: Partner,
    resources: ResourcesDep,
    school_id: str | None = None,
    status: str | None = None,
) -> Any:
    def load() -> dict[str, Any]:
        with session_scope(resources.engine) as session:
            service.expire_due(session, resources.clock.now(), school_id)
            rows = service.list_writes(
                session, partner_id=partner.partner_id, school_id=school_id, status=status
            )
            return {"data": [service.write_view(w) for w in rows]}

    return await run_in_threadpool(load)


# -- the agent ----------------------------------------------------------------------------


@agent_router.get(
    "/writes/{write_id}",
    summary="Fetch a write's records to apply (marks it delivered)",
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
def fetch_write(
    write_id: str, agent: AgentDep, resources: ResourcesDep, cache: CacheDep
) -> dict[str, Any]:
    with session_scope(resources.engine) as session:
        return service.deliver(
            session, cache.keyring, agent.school_id, write_id, resources.clock.now()
        )


@agent_router.post(
    "/writes/{write_id}/results",
    response_model=WriteOut,
    summary="Report the per-record outcome of a write",
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
def write_results(
    write_id: str, body: AgentResults, agent: AgentDep, resources: ResourcesDep
) -> dict[str, Any]:
    with session_scope(resources.engine) as session:
        write = service.record_results(
            session,
            agent.school_id,
            write_id,
            [r.model_dump() for r in body.results],
            resources.clock.now(),
        )
        return service.write_view(write)


# -- the school admin ---------------------------------------------------------------------


def school_writes(ctx: Any, status: str | None) -> list[dict[str, Any]]:
    """The school's writes for the admin API and the console."""
    service.expire_due(ctx.session, ctx.now, ctx.school.id)
    rows = service.list_writes(ctx.session, school_id=ctx.school.id, status=status)
    names: dict[str, str | None] = {}
    for row in rows:
        if row.partner_id not in names:
            partner = ctx.session.get(PartnerRow, row.partner_id)
            names[row.partner_id] = partner.name if partner is not None else None
    return [service.admin_view(w, names[w.partner_id]) for w in rows]


def cancel_write(ctx: Any, write_id: str) -> dict[str, Any]:
    """Cancel a queued write of the school, audited (the API and the console alike)."""
    write = service.cancel_by_school(ctx.session, ctx.school.id, write_id, ctx.admin.actor, ctx.now)
    ConsentRepository(ctx.session).add_audit(
        AuditEvent(
            at=ctx.now,
            actor=ctx.admin.actor,
            action="write.cancelled",
            target=ctx.school.id,
            detail={"write_id": write.id, "partner_id": write.partner_id, "area": write.area},
        )
    )
    partner = ctx.session.get(PartnerRow, write.partner_id)
    return service.admin_view(write, partner.name if partner is not None else None)


@admin_router.get(
    "/writes",
    summary="My school's writes from partners, newest first",
    responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM},
)
def admin_list_writes(
    ctx: AdminDep,
    status: Annotated[str | None, Query(description="Only writes in this status")] = None,
) -> dict[str, Any]:
    return {"data": school_writes(ctx, status)}


@admin_router.post(
    "/writes/{write_id}/cancel",
    summary="Cancel a queued write before the agent fetches it",
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
def admin_cancel_write(write_id: str, ctx: AdminDep) -> dict[str, Any]:
    return cancel_write(ctx, write_id)


def install_writes(app: Any) -> None:
    for router in (partner_router, agent_router, admin_router):
        app.include_router(router)
