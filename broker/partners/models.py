"""Tables of the partners context."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary
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


class PartnerRequestVersion(SQLModel, table=True):
    """One version of what a partner asks schools for, field by field, each with a reason.

    `request` is the normalised document (`broker.partners.requests`); versions are never
    changed: a school's consent records the version its admin last reviewed, and what a
    newer version adds stays pending there until an admin approves it.
    """

    __tablename__ = "partner_request_versions"

    partner_id: str = Field(foreign_key="partners.id", primary_key=True, max_length=40)
    version: int = Field(primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class AudienceView(SQLModel, table=True):
    """The pupils a partner was last shared at a school (sealed with the school's key):
    what the next change of audience is compared with to find the pupils who left."""

    __tablename__ = "audience_views"

    school_id: str = Field(foreign_key="schools.id", primary_key=True, max_length=40)
    partner_id: str = Field(foreign_key="partners.id", primary_key=True, max_length=40)
    fingerprint: str = Field(max_length=64)
    members_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    updated_at: datetime = Field(sa_type=UTCDateTime)


class AudienceDeparture(SQLModel, table=True):
    """Pupils who left a partner's view at `left_at` (sealed ids): its `updated_since`
    reads carry them as deletions."""

    __tablename__ = "audience_departures"
    __table_args__ = (
        Index("ix_audience_departures_pair_at", "school_id", "partner_id", "left_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    school_id: str = Field(foreign_key="schools.id", max_length=40)
    partner_id: str = Field(foreign_key="partners.id", max_length=40)
    left_at: datetime = Field(sa_type=UTCDateTime)
    ids_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
