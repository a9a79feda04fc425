"""The `writes` table: one partner write, its sealed payload and its per-record results."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class WriteStatus(StrEnum):
    QUEUED = "queued"  # waiting for the agent to fetch it
    DELIVERED = "delivered"  # fetched by the agent; being applied
    APPLIED = "applied"
    PARTIALLY_APPLIED = "partially_applied"
    FAILED = "failed"  # every record rejected by the MIS
    EXPIRED = "expired"  # not delivered in time
    CANCELLED = "cancelled"  # by the school, or its consent was revoked or suspended


OPEN_STATUSES = (WriteStatus.QUEUED, WriteStatus.DELIVERED)
FINISHED_STATUSES = tuple(s for s in WriteStatus if s not in OPEN_STATUSES)


class Write(SQLModel, table=True):
    """One write.  `payload_sealed` is the records, AES-GCM under the school's data key; it
    is dropped (`purged_at`) a while after the write finished, the metadata stays."""

    __tablename__ = "writes"
    __table_args__ = (
        UniqueConstraint("partner_id", "idempotency_key", name="uq_writes_partner_key"),
        Index("ix_writes_school_status", "school_id", "status"),
        Index("ix_writes_partner_created", "partner_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", max_length=40)
    partner_id: str = Field(max_length=40)
    consent_id: str | None = Field(default=None, max_length=40)
    area: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=200)
    # SHA-256 of the canonical request body: the same key with another body is refused.
    body_digest: str = Field(max_length=64)
    count: int
    status: WriteStatus = Field(default=WriteStatus.QUEUED, sa_type=enum_column(WriteStatus))
    # rejected | expired | cancelled, for a write that failed as a whole.
    reason: str | None = Field(default=None, max_length=40)
    results: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    payload_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_by: str | None = Field(default=None, max_length=200)
