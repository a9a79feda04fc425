"""Tables of the webhooks context."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(SQLModel, table=True):
    """One event for one partner; its id is the Standard Webhooks `webhook-id`.

    `expires_at` ends the retry window (created_at + 24 h, or a redelivery + 24 h).  While an
    attempt is in flight `next_attempt_at` holds the claim's lease, so no other worker sends
    the same attempt.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "partner_id", name="uq_webhook_deliveries_event_partner"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_partner", "partner_id", "created_at", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    partner_id: str = Field(foreign_key="partners.id", max_length=40)
    # No foreign key: the outbox may be pruned while deliveries stay listable.
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=40)
    school_id: str = Field(max_length=40)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING, sa_type=enum_column(DeliveryStatus)
    )
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
