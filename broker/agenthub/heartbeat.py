"""Agent telemetry and health, as operators and school admins see it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from broker.agenthub import commands, held
from broker.agenthub.models import AgentCommand
from broker.agenthub.telemetry import bound_telemetry
from broker.clock import rfc3339
from broker.schools.models import Agent
from broker.schools.repository import SchoolRepository
from broker.writes import service as writes
from cache.models import table_of


class AreaExtraction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime | None = None
    ok: bool | None = None
    records: int | None = Field(default=None, ge=0)
    duration_seconds: float | None = Field(default=None, ge=0)
    error: str | None = None


class Telemetry(BaseModel):
    """What an agent reports each minute; unknown keys are kept (newer agents report more).

    Sizes are not limited here but cut by `bound_telemetry` before storing: an oversized
    report is shortened with a marker, never refused, so the agent is never cut off.
    """

    model_config = ConfigDict(extra="allow")

    agent_version: str | None = None
    os: str | None = None
    mis: str | None = None
    cpu_percent: float | None = Field(default=None, ge=0)
    memory: dict[str, float] | None = None
    disk: dict[str, float] | None = None
    last_extraction: dict[str, AreaExtraction] = Field(default_factory=dict)
    errors: list[str] = Field(default_factory=list)


class CommandOut(BaseModel):
    id: str
    kind: str
    args: dict[str, Any]


class WriteOffer(BaseModel):
    """A write waiting for the agent: fetch it with GET /v1/agent/writes/{write_id}."""

    write_id: str
    area: str
    count: int


class HeartbeatReply(BaseModel):
    commands: list[CommandOut]
    server_time: str
    writes: list[WriteOffer] = Field(default_factory=list)


_AGENTS = table_of(Agent)
_TOUCH_AGENT = (
    update(_AGENTS)
    .where(_AGENTS.c.id == bindparam("agent_id"))
    .values(last_heartbeat_at=bindparam("at"), telemetry=bindparam("telemetry"))
)


# Open commands (queued or sent unanswered) and open writes, asked in one query.
_WAITING = select(commands.ANY_OPEN.label("commands"), writes.ANY_OPEN.label("writes"))


def record_heartbeat(
    session: Session, *, agent_id: str, school_id: str, telemetry: Telemetry, now: datetime
) -> HeartbeatReply:
    # One UPDATE, not an ORM load and flush: every agent sends this each minute.
    touched = session.connection().execute(
        _TOUCH_AGENT,
        {
            "agent_id": agent_id,
            "at": now,
            "telemetry": bound_telemetry(telemetry.model_dump(mode="json")),
        },
    )
    if touched.rowcount != 1:
        raise LookupError(f"agent {agent_id} vanished while reporting")  # it authenticated
    # Most heartbeats find nothing waiting: one query says so, and only what waits is read.
    waiting = session.connection().execute(_WAITING, {"school_id": school_id}).one()
    out = commands.hand_out(session, school_id=school_id, now=now) if waiting.commands else []
    offers = writes.offers(session, school_id, now) if waiting.writes else []
    return HeartbeatReply(
        commands=[CommandOut(id=c.id, kind=c.kind.value, args=c.args) for c in out],
        server_time=rfc3339(now),
        writes=[WriteOffer(**offer) for offer in offers],
    )


def _command_view(command: AgentCommand) -> dict[str, Any]:
    return {
        "id": command.id,
        "kind": command.kind.value,
        "args": command.args,
        "status": command.status.value,
        "reason": command.reason,
        "created_at": rfc3339(command.created_at),
        "completed_at": rfc3339(command.completed_at) if command.completed_at else None,
        "attempts": command.attempts,
        "detail": command.result_detail,
    }


def agent_health(
    session: Session,
    *,
    school_id: str,
    now: datetime,
    silent_after: timedelta,
    area_states: list[dict[str, Any]] | None = None,
    command_limit: int = commands.HISTORY_PAGE,
) -> dict[str, Any]:
    """Every agent of the school: last heartbeat, telemetry, silence flag; areas; commands."""
    agents = []
    for agent in SchoolRepository(session).agents(school_id):
        last = agent.last_heartbeat_at
        silent = agent.revoked_at is None and (last is None or now - last > silent_after)
        telemetry = agent.telemetry or {}
        agents.append(
            {
                "agent_id": agent.id,
                "key_hint": agent.key_hint,
                "revoked": agent.revoked_at is not None,
                "last_heartbeat_at": rfc3339(last) if last else None,
                "seconds_since_heartbeat": int((now - last).total_seconds()) if last else None,
                "silent": silent,
                "telemetry": telemetry,
                "errors": telemetry.get("errors", []),
            }
        )
    return {
        "school_id": school_id,
        "checked_at": rfc3339(now),
        "silent_after_seconds": int(silent_after.total_seconds()),
        "agents": agents,
        "areas": area_states or [],
        "held_deletions": held.held_view(session, school_id),
        "commands": [
            _command_view(c) for c in commands.command_history(session, school_id, command_limit)
        ],
    }
