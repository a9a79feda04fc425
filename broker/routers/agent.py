"""Agent API: uploads, heartbeats and command results (auth: the school's agent key)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from broker.agenthub import commands
from broker.agenthub.auth import AgentDep, AgentPrincipal
from broker.agenthub.heartbeat import HeartbeatReply, Telemetry, record_heartbeat
from broker.agenthub.ingest import ingest
from broker.agenthub.uploads import MAX_SEQUENCE_UPLOADS, decode_body, sequence_items
from broker.clock import Clock
from broker.db import session_scope
from broker.deps import get_batch_applier, get_clock, get_resources, get_session
from broker.errors import PayloadTooLargeError
from broker.ops.metrics import AGENT_UPLOAD_RECORDS, AGENT_UPLOADS
from broker.problems import content_problem
from broker.resources import Resources
from broker.settings import BrokerSettings
from cache.service import CacheService

router = APIRouter(prefix="/v1/agent", tags=["agent"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


class UploadRecord(BaseModel):
    id: str


class UploadBody(BaseModel):
    """Documented for OpenAPI; the endpoint validates the raw body against the catalogue."""

    batch_id: str = Field(description="A UUID chosen by the agent; repeats are idempotent")
    area: str = Field(description="A data area of the catalogue (`misbroker areas`)")
    mode: Literal["full", "delta"]
    extracted_at: str = Field(description="RFC 3339 time the MIS was read")
    records: list[dict[str, Any]] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)


class UploadResult(BaseModel):
    batch_id: str
    area: str
    applied: int
    deleted: int


class SequenceItemResult(BaseModel):
    index: int = Field(description="The upload's line in the sequence, from 0")
    status: int = Field(description="What `POST /v1/agent/uploads` would have answered")
    answer: UploadResult | None = Field(default=None, description="When status is 200")
    problem: dict[str, Any] | None = Field(
        default=None, description="When refused: the problem details that upload alone gets"
    )


class SequenceResult(BaseModel):
    uploads: int = Field(description="Uploads in the request")
    results: list[SequenceItemResult] = Field(
        description="One for each upload tried, in order.  The first refusal ends the "
        "sequence: the uploads after it were not tried (nothing of them applied)."
    )


class CommandResult(BaseModel):
    status: Literal["done", "failed"]
    detail: str | None = Field(default=None, max_length=2000)


class CommandAck(BaseModel):
    id: str
    status: str


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"upload body over {limit} bytes", limit_bytes=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"upload body over {limit} bytes", limit_bytes=limit)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/uploads",
    response_model=UploadResult,
    summary="Upload one area (full or delta), applied atomically and at most once",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": UploadBody.model_json_schema()}},
        }
    },
    responses={
        401: PROBLEM,
        403: PROBLEM,
        409: PROBLEM,
        413: PROBLEM,
        415: PROBLEM,
        422: PROBLEM,
    },
)
async def upload(
    request: Request,
    agent: AgentDep,
    resources: Annotated[Resources, Depends(get_resources)],
    clock: Annotated[Clock, Depends(get_clock)],
    applier: Annotated[CacheService, Depends(get_batch_applier)],
) -> dict[str, Any]:
    try:
        response = await _read_then_apply(_one, request, resources, clock, applier, agent)
    except Exception:
        AGENT_UPLOADS.labels("refused").inc()
        raise
    AGENT_UPLOADS.labels("applied").inc()
    AGENT_UPLOAD_RECORDS.inc(int(response.get("applied", 0)) + int(response.get("deleted", 0)))
    return response


# Applies one upload's inflated body: `ingest`, bound to the request's agent and settings.
IngestOne = Callable[[bytes | bytearray], dict[str, Any]]
# What an endpoint does with the inflated body: one upload, or each upload of a sequence.
ApplyBody = Callable[[bytes | bytearray, IngestOne], dict[str, Any]]


async def _read_then_apply(
    apply: ApplyBody,
    request: Request,
    resources: Resources,
    clock: Clock,
    applier: CacheService,
    agent: AgentPrincipal,
) -> dict[str, Any]:
    settings = resources.settings.broker
    raw = await _read_capped(request, settings.upload_max_compressed_bytes)
    # Inflating, validating and applying are CPU and database work: off the event loop, in
    # one hand-off to the thread pool (each costs the loop and a thread a wake-up).
    return await run_in_threadpool(
        _decode_then_apply,
        apply,
        raw,
        request.headers.get("content-encoding"),
        settings,
        resources.engine,
        applier,
        agent,
        clock.now(),
    )


def _decode_then_apply(
    apply: ApplyBody,
    raw: bytes,
    content_encoding: str | None,
    settings: BrokerSettings,
    engine: Engine,
    applier: CacheService,
    agent: AgentPrincipal,
    now: datetime,
) -> dict[str, Any]:
    body = decode_body(raw, content_encoding, settings.upload_max_bytes)

    def ingest_one(upload: bytes | bytearray) -> dict[str, Any]:
        return ingest(
            engine,
            applier,
            agent,
            upload,
            now,
            max_records=settings.upload_max_records,
            max_values=settings.upload_max_values,
        )

    return apply(body, ingest_one)


def _one(body: bytes | bytearray, ingest_one: IngestOne) -> dict[str, Any]:
    return ingest_one(body)


SEQUENCE_MEDIA_TYPE = "application/x-ndjson"


@router.post(
    "/uploads/sequence",
    response_model=SequenceResult,
    summary="Several uploads in one request, applied in order, each atomically and at most once",
    description=(
        "The body holds one upload a line (NDJSON), each exactly the body `POST "
        "/v1/agent/uploads` takes, so a repeated `batch_id` is recognised however it was "
        "sent.  Gzip may come as one member or one member an upload.  The body's limits "
        f"are one upload's; at most {MAX_SEQUENCE_UPLOADS} uploads.  Each upload is applied "
        "in its own transaction, in order; the first one refused ends the sequence, and "
        "its answer says which were tried.  A failure that is not an upload's fault (a "
        "database down) fails the whole request, as it would fail one upload: what was "
        "applied before it is answered again, unchanged, when the sequence is sent again."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                SEQUENCE_MEDIA_TYPE: {
                    "schema": {"type": "string", "description": "One upload a line"}
                }
            },
        }
    },
    responses={401: PROBLEM, 403: PROBLEM, 413: PROBLEM, 415: PROBLEM, 422: PROBLEM},
)
async def upload_sequence(
    request: Request,
    agent: AgentDep,
    resources: Annotated[Resources, Depends(get_resources)],
    clock: Annotated[Clock, Depends(get_clock)],
    applier: Annotated[CacheService, Depends(get_batch_applier)],
) -> dict[str, Any]:
    return await _read_then_apply(_each, request, resources, clock, applier, agent)


def _each(body: bytes | bytearray, ingest_one: IngestOne) -> dict[str, Any]:
    items = sequence_items(body)
    results: list[dict[str, Any]] = []
    for index, upload in enumerate(items):
        try:
            answer = ingest_one(upload)
        except Exception as exc:
            AGENT_UPLOADS.labels("refused").inc()
            problem = content_problem(exc)
            if problem is None:
                raise  # not this upload's fault: the request fails, as one upload's would
            results.append({"index": index, "status": problem["status"], "problem": problem})
            break
        AGENT_UPLOADS.labels("applied").inc()
        AGENT_UPLOAD_RECORDS.inc(int(answer["applied"]) + int(answer["deleted"]))
        results.append({"index": index, "status": 200, "answer": answer})
    return {"uploads": len(items), "results": results}


@router.post(
    "/heartbeat",
    response_model=HeartbeatReply,
    summary="Report telemetry; receive queued commands",
    responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM},
)
async def heartbeat(
    telemetry: Telemetry,
    agent: AgentDep,
    resources: Annotated[Resources, Depends(get_resources)],
    clock: Annotated[Clock, Depends(get_clock)],
) -> HeartbeatReply:
    # One hand-off to the thread pool for the whole unit of work, not one for the session
    # dependency's start, one for its end and one for the endpoint: each costs the event
    # loop and a thread a wake-up, and every school's agent sends one of these a minute.
    return await run_in_threadpool(
        _record_heartbeat, resources.engine, agent, telemetry, clock.now()
    )


def _record_heartbeat(
    engine: Engine, agent: AgentPrincipal, telemetry: Telemetry, now: datetime
) -> HeartbeatReply:
    with session_scope(engine) as session:
        return record_heartbeat(
            session,
            agent_id=agent.agent_id,
            school_id=agent.school_id,
            telemetry=telemetry,
            now=now,
        )


@router.post(
    "/commands/{command_id}/result",
    response_model=CommandAck,
    summary="Report the outcome of a command",
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
def command_result(
    command_id: str,
    result: CommandResult,
    agent: AgentDep,
    session: Annotated[Session, Depends(get_session)],
    clock: Annotated[Clock, Depends(get_clock)],
) -> CommandAck:
    command = commands.record_result(
        session,
        school_id=agent.school_id,
        command_id=command_id,
        succeeded=result.status == "done",
        detail=result.detail,
        now=clock.now(),
    )
    return CommandAck(id=command.id, status=command.status.value)
