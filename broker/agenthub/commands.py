"""Commands queued for a school's agent, picked up with its heartbeat, results recorded.

Delivery is at least once: a command handed out and not answered within RESEND_AFTER is
handed out again, so an agent that crashed mid-command still gets it; agents treat a
command id they have already completed as done.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import bindparam, exists
from sqlmodel import Session, col, select

from broker.agenthub.models import AgentCommand, CommandKind, CommandStatus
from broker.errors import ConflictError, InvalidInputError, NotFoundError
from broker.ids import new_id
from cache.models import table_of
from consent.areas import CATALOGUE

RESEND_AFTER = timedelta(minutes=10)
COMMAND_LIFETIME = timedelta(days=2)
MAX_COMMANDS_PER_HEARTBEAT = 20
OPEN = (CommandStatus.QUEUED, CommandStatus.SENT)
_COMMANDS = table_of(AgentCommand)
# Whether `hand_out` has anything for the school's agent (bind `school_id`): a row read, no
# ORM object, for the heartbeats that find nothing.
ANY_OPEN: Final = exists().where(
    _COMMANDS.c.school_id == bindparam("school_id"), _COMMANDS.c.status.in_(OPEN)
)


def _open_commands(session: Session, school_id: str) -> Sequence[AgentCommand]:
    stmt = (
        select(AgentCommand)
        .where(AgentCommand.school_id == school_id, col(AgentCommand.status).in_(OPEN))
        .order_by(col(AgentCommand.created_at), col(AgentCommand.id))
    )
    return session.exec(stmt).all()


def queue_command(
    session: Session,
    *,
    school_id: str,
    kind: CommandKind,
    args: dict[str, Any] | None,
    reason: str,
    now: datetime,
) -> AgentCommand:
    command = AgentCommand(
        id=new_id("cmd"),
        school_id=school_id,
        kind=kind,
        args=args or {},
        reason=reason[:200],
        created_at=now,
    )
    session.add(command)
    session.flush()
    return command


def request_extract(
    session: Session, *, school_id: str, areas: Sequence[str], reason: str, now: datetime
) -> AgentCommand:
    """Queue an extraction, folding into one still waiting rather than piling up repeats."""
    unknown = [a for a in areas if a not in CATALOGUE]
    if unknown or not areas:
        raise InvalidInputError(f"unknown or no data area(s): {', '.join(unknown) or '-'}")
    for command in _open_commands(session, school_id):
        if command.kind is CommandKind.EXTRACT and command.status is CommandStatus.QUEUED:
            merged = sorted(set(command.args.get("areas", [])) | set(areas))
            command.args = {**command.args, "areas": merged}
            session.add(command)
            return command
    return queue_command(
        session,
        school_id=school_id,
        kind=CommandKind.EXTRACT,
        args={"areas": sorted(set(areas))},
        reason=reason,
        now=now,
    )


def pending_extract_areas(session: Session, school_id: str) -> set[str]:
    return {
        area
        for command in _open_commands(session, school_id)
        if command.kind is CommandKind.EXTRACT
        for area in command.args.get("areas", [])
    }


def hand_out(session: Session, *, school_id: str, now: datetime) -> list[AgentCommand]:
    """The commands to send with this heartbeat: new ones and unanswered old ones."""
    out: list[AgentCommand] = []
    for command in _open_commands(session, school_id):
        if now - command.created_at > COMMAND_LIFETIME:
            command.status = CommandStatus.EXPIRED
            command.completed_at = now
        elif _due(command, now) and len(out) < MAX_COMMANDS_PER_HEARTBEAT:
            command.status = CommandStatus.SENT
            command.sent_at = now
            command.attempts += 1
            out.append(command)
        session.add(command)
    return out


def _due(command: AgentCommand, now: datetime) -> bool:
    if command.status is CommandStatus.QUEUED:
        return True
    return command.sent_at is not None and now - command.sent_at >= RESEND_AFTER


def record_result(
    session: Session,
    *,
    school_id: str,
    command_id: str,
    succeeded: bool,
    detail: str | None,
    now: datetime,
) -> AgentCommand:
    command = session.get(AgentCommand, command_id)
    if command is None or command.school_id != school_id:
        raise NotFoundError(f"no command {command_id!r} for this agent")
    status = CommandStatus.DONE if succeeded else CommandStatus.FAILED
    if command.status in (CommandStatus.DONE, CommandStatus.FAILED):
        if command.status is status:
            return command  # a retried report: same answer, nothing changes
        raise ConflictError(f"command {command_id} already reported as {command.status.value}")
    command.status = status
    command.completed_at = now
    command.result_detail = (detail or "")[:2000] or None
    session.add(command)
    return command


HISTORY_PAGE = 50
HISTORY_MAX = 500


def command_history(
    session: Session, school_id: str, limit: int = HISTORY_PAGE
) -> Sequence[AgentCommand]:
    stmt = (
        select(AgentCommand)
        .where(AgentCommand.school_id == school_id)
        .order_by(col(AgentCommand.created_at).desc())
        .limit(max(1, min(limit, HISTORY_MAX)))
    )
    return session.exec(stmt).all()
