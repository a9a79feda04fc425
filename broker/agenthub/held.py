"""Held mass deletions at the broker: refuse, remember, show, and release on confirmation.

The rule itself (`agents.deletion_guard.holds`) is pure and shared with the agent.  An
upload it holds is answered 409 `mass-deletion-held` and recorded here in a transaction of
its own (the upload's is rolled back).  An admin or operator confirms the area; that
queues an extraction the agent runs with its own guard lifted, and lets the next upload
of the area through once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from agents.deletion_guard import DeletionLimit, HeldDeletion, holds
from broker.agenthub import commands
from broker.agenthub.models import CommandKind
from broker.agenthub.models import HeldDeletion as HeldRow
from broker.clock import rfc3339
from broker.errors import DomainError, NotFoundError
from broker.ids import new_id
from broker.schools.repository import SchoolRepository
from consent.areas import CATALOGUE


class MassDeletionHeldError(DomainError):
    status = 409
    slug = "mass-deletion-held"
    title = "Mass deletion held"

    def __init__(self, held: HeldDeletion, batch_id: str) -> None:
        super().__init__(
            held.describe(), area=held.area, records=held.records, deleting=held.deleting
        )
        self.held = held
        self.batch_id = batch_id


def open_rows(session: Session, school_id: str, area: str | None = None) -> Sequence[HeldRow]:
    stmt = select(HeldRow).where(HeldRow.school_id == school_id, col(HeldRow.released_at).is_(None))
    if area is not None:
        stmt = stmt.where(HeldRow.area == area)
    return session.exec(stmt.order_by(col(HeldRow.held_at))).all()


def guard(
    session: Session,
    *,
    school_id: str,
    area: str,
    batch_id: str,
    limit: DeletionLimit,
    now: datetime,
) -> Callable[[int, int], None]:
    """The cache's deletion guard for one upload: passes, releases a confirmation, or raises."""

    def check(records: int, deleting: int) -> None:
        if not holds(limit, records, deleting, area):
            return
        confirmed = [r for r in open_rows(session, school_id, area) if r.confirmed_at]
        if not confirmed:
            raise MassDeletionHeldError(HeldDeletion(area, records, deleting), batch_id)
        for row in open_rows(session, school_id, area):
            row.released_at = now
            session.add(row)

    return check


def record_held(
    session: Session, *, school_id: str, error: MassDeletionHeldError, now: datetime
) -> None:
    """Remember a refused upload (one open row per area, with the latest counts)."""
    held = error.held
    rows = open_rows(session, school_id, held.area)
    row = (
        rows[-1]
        if rows
        else HeldRow(id=new_id("hold"), school_id=school_id, area=held.area, held_at=now)
    )
    row.batch_id, row.records, row.deleting, row.held_at = (
        error.batch_id,
        held.records,
        held.deleting,
        now,
    )
    session.add(row)


def agent_holds(session: Session, school_id: str) -> list[dict[str, Any]]:
    """Deletions the school's agents report holding back (telemetry `held_deletions`)."""
    out = []
    for agent in SchoolRepository(session).agents(school_id):
        if agent.revoked_at is not None:
            continue
        for item in (agent.telemetry or {}).get("held_deletions") or []:
            if isinstance(item, dict) and isinstance(item.get("area"), str):
                out.append({**item, "held_by": "agent", "agent_id": agent.id})
    return out


def held_view(session: Session, school_id: str) -> list[dict[str, Any]]:
    """Every held deletion of the school, the broker's and the agents', with counts."""
    broker = [
        {
            "area": row.area,
            "records": row.records,
            "deleting": row.deleting,
            "held_at": rfc3339(row.held_at),
            "held_by": "broker",
            "batch_id": row.batch_id,
            "confirmed_at": rfc3339(row.confirmed_at) if row.confirmed_at else None,
            "confirmed_by": row.confirmed_by,
        }
        for row in open_rows(session, school_id)
    ]
    return broker + agent_holds(session, school_id)


def confirm(
    session: Session, *, school_id: str, area: str, actor: str, now: datetime
) -> dict[str, Any]:
    """Let the area's held deletion go through: once at the broker, once at the agent."""
    if area not in CATALOGUE:
        raise NotFoundError(f"no data area {area!r}")
    rows = list(open_rows(session, school_id, area))
    reported = [h for h in agent_holds(session, school_id) if h["area"] == area]
    if not rows and not reported:
        raise NotFoundError(f"no deletion is held for {area}")
    if not rows:
        first = reported[0]
        rows = [
            HeldRow(
                id=new_id("hold"),
                school_id=school_id,
                area=area,
                records=_count(first.get("records")),
                deleting=_count(first.get("deleting")),
                held_at=now,
            )
        ]
    for row in rows:
        row.confirmed_at, row.confirmed_by = now, actor[:200]
        session.add(row)
    command = commands.queue_command(
        session,
        school_id=school_id,
        kind=CommandKind.EXTRACT,
        args={"areas": [area], "confirm_deletion": True},
        reason=f"{actor} confirmed the held deletion",
        now=now,
    )
    return {
        "area": area,
        "records": rows[-1].records,
        "deleting": rows[-1].deleting,
        "confirmed_at": rfc3339(now),
        "confirmed_by": actor[:200],
        "command_id": command.id,
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
