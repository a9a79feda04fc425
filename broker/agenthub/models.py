"""Tables: applied upload batches (idempotency) and commands queued for agents."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class UploadBatch(SQLModel, table=True):
    """One accepted upload.  A repeat of `batch_id` answers `response` and applies nothing."""

    __tablename__ = "upload_batches"

    batch_id: str = Field(primary_key=True, max_length=36)
    school_id: str = Field(foreign_key="schools.id", index=True, max_length=40)
    area: str = Field(max_length=64)
    mode: str = Field(max_length=8)
    # SHA-256 of the decoded body: the same id with other content is a client bug, refused.
    body_digest: str = Field(max_length=64)
    extracted_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(sa_type=UTCDateTime)
    response: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class CommandKind(StrEnum):
    EXTRACT = "extract"
    RECONNECT = "reconnect"
    RESTART = "restart"
    CHECK_UPDATE = "check_update"
    CONFIGURE = "configure"


class CommandStatus(StrEnum):
    QUEUED = "queued"  # waiting for the agent's next heartbeat
    SENT = "sent"  # handed to the agent; sent again if no result comes back in time
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"  # never picked up in its lifetime


class AgentCommand(SQLModel, table=True):
    __tablename__ = "agent_commands"
    __table_args__ = (Index("ix_agent_commands_pending", "school_id", "status"),)

    id: str = Field(primary_key=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", max_length=40)
    kind: CommandKind = Field(sa_type=enum_column(CommandKind))
    args: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: CommandStatus = Field(default=CommandStatus.QUEUED, sa_type=enum_column(CommandStatus))
    reason: str = Field(max_length=200)  # who asked and why: "admin:adm_..", "cache.refresh"
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    result_detail: str | None = Field(default=None, max_length=2000)


class HeldDeletion(SQLModel, table=True):
    """An upload refused because it deleted too much of an area, until someone confirms.

    One open row per school and area: held (`confirmed_at` null), then confirmed, then
    released when the next upload of the area that needed the confirmation was applied.
    """

    __tablename__ = "held_deletions"
    __table_args__ = (Index("ix_held_deletions_open", "school_id", "area", "released_at"),)

    id: str = Field(primary_key=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", max_length=40)
    area: str = Field(max_length=64)
    batch_id: str | None = Field(default=None, max_length=36)  # None: held by the agent
    records: int = 0  # live records of the area when it was held
    deleting: int = 0
    held_at: datetime = Field(sa_type=UTCDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    confirmed_by: str | None = Field(default=None, max_length=200)
    released_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
