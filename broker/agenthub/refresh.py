"""A school admin's "refresh now": one rule for the admin API and the console."""

from __future__ import annotations

from collections.abc import Sequence

from broker.admin.deps import AdminContext
from broker.agenthub import commands
from broker.agenthub.models import AgentCommand
from broker.errors import ConflictError
from broker.schools.models import SchoolStatus
from consent.models import AuditEvent
from consent.repository import ConsentRepository


def refresh_now(ctx: AdminContext, areas: Sequence[str]) -> AgentCommand:
    """Ask the school's agent to extract `areas` now; a closed school has no agent to ask."""
    if ctx.school.status is not SchoolStatus.ACTIVE:
        raise ConflictError("this school is closed")
    command = commands.request_extract(
        ctx.session,
        school_id=ctx.school.id,
        areas=areas,
        reason=f"{ctx.admin.actor} asked for a refresh",
        now=ctx.now,
    )
    ConsentRepository(ctx.session).add_audit(
        AuditEvent(
            at=ctx.now,
            actor=ctx.admin.actor,
            action="agent.refresh_requested",
            target=ctx.school.id,
            detail={"command_id": command.id, "areas": sorted(set(areas))},
        )
    )
    return command
