"""What a school admin asks of its agent (refresh now, let a held deletion through): one
rule each for the admin API and the console, audited alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.admin.deps import AdminContext
from broker.agenthub import commands, held
from broker.agenthub.models import AgentCommand
from broker.errors import ConflictError
from broker.schools.models import SchoolStatus
from consent.models import AuditEvent
from consent.repository import ConsentRepository


def refresh_now(ctx: AdminContext, areas: Sequence[str]) -> AgentCommand:
    """Ask the school's agent to extract `areas` now; a closed school has no agent to ask."""
    _require_open(ctx)
    command = commands.request_extract(
        ctx.session,
        school_id=ctx.school.id,
        areas=areas,
        reason=f"{ctx.admin.actor} asked for a refresh",
        now=ctx.now,
    )
    _audit(ctx, "agent.refresh_requested", command_id=command.id, areas=sorted(set(areas)))
    return command


def confirm_held_deletion(ctx: AdminContext, area: str) -> dict[str, Any]:
    """Let the area's held mass deletion go through, once (at the broker and at the agent)."""
    _require_open(ctx)
    result = held.confirm(
        ctx.session, school_id=ctx.school.id, area=area, actor=ctx.admin.actor, now=ctx.now
    )
    _audit(ctx, "agent.deletion_confirmed", area=area)
    return result


def _require_open(ctx: AdminContext) -> None:
    if ctx.school.status is not SchoolStatus.ACTIVE:
        raise ConflictError("this school is closed")


def _audit(ctx: AdminContext, action: str, **detail: Any) -> None:
    event = AuditEvent(
        at=ctx.now, actor=ctx.admin.actor, action=action, target=ctx.school.id, detail=detail
    )
    ConsentRepository(ctx.session).add_audit(event)
