"""The transactional outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime

EVENT_TYPES = frozenset(
    {
        "consent.granted",
        "consent.updated",
        "consent.revoked",
        "consent.suspended",
        "consent.resumed",
        "consent.ended",
        "data.updated",
        "write.applied",
        "write.failed",
    }
)


class OutboxEvent(SQLModel, table=True):
    __tablename__ = "events_outbox"
    __table_args__ = (Index("ix_events_outbox_pending", "dispatched_at", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    type: str = Field(max_length=40)
    school_id: str = Field(max_length=40, index=True)
    # None: every partner with a consent covering `area` hears of it (data events).
    partner_id: str | None = Field(default=None, max_length=40)
    area: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)
    dispatched_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
