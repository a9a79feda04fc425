"""Tables of the partners context."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class PartnerStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class Partner(SQLModel, table=True):
    __tablename__ = "partners"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200, unique=True)
    client_id: str = Field(max_length=64, unique=True, index=True)
    client_secret_hash: str = Field(max_length=64)
    # After a rotation the old secret keeps working until this time, so a partner can roll
    # its configuration over without an outage (none when rotated with --revoke-old).
    previous_secret_hash: str | None = Field(default=None, max_length=64)
    previous_secret_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    webhook_url: str | None = Field(default=None, max_length=2000)
    # Needed in clear to sign webhooks, so sealed under the KEK rather than hashed.
    webhook_secret_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    rate_limit_per_minute: int = Field(default=600, ge=1)
    status: PartnerStatus = Field(default=PartnerStatus.ACTIVE, sa_type=enum_column(PartnerStatus))
    created_at: datetime = Field(sa_type=UTCDateTime)


class PartnerAreaRequest(SQLModel, table=True):
    """An area a partner asks schools for, and why (as in its data sharing agreement)."""

    __tablename__ = "partner_area_requests"

    partner_id: str = Field(foreign_key="partners.id", primary_key=True, max_length=40)
    area: str = Field(primary_key=True, max_length=64)
    reason: str | None = Field(default=None, max_length=1000)
