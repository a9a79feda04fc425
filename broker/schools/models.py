"""Tables of the schools context."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, LargeBinary
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class SchoolStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class School(SQLModel, table=True):
    __tablename__ = "schools"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    dfe_number: str = Field(max_length=7, unique=True, index=True)
    urn: str | None = Field(default=None, max_length=8)
    status: SchoolStatus = Field(default=SchoolStatus.ACTIVE, sa_type=enum_column(SchoolStatus))
    created_at: datetime = Field(sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Agent(SQLModel, table=True):
    """An on-prem agent.  Its key is stored as a SHA-256 digest only."""

    __tablename__ = "agents"

    id: str = Field(primary_key=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", index=True, max_length=40)
    key_hash: str = Field(max_length=64, unique=True)
    key_hint: str = Field(max_length=16)  # first characters, to tell keys apart in a list
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    telemetry: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class SchoolAdmin(SQLModel, table=True):
    """A school administrator: password (argon2id) plus TOTP, sealed under the KEK."""

    __tablename__ = "school_admins"

    id: str = Field(primary_key=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", index=True, max_length=40)
    email: str = Field(max_length=254, unique=True, index=True)
    password_hash: str = Field(max_length=255)
    totp_secret_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    totp_last_step: int | None = None  # refuses replay of a code already used
    # When a valid code was first given: until then the console's first sign-in shows the
    # QR code to enrol an authenticator app.
    totp_confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    disabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class StudentRestrictions(SQLModel, table=True):
    """A school's restricted pupils (data to no partner, e.g. for safeguarding): one sealed
    map of pupil id -> {reason, at}, so neither ids nor reasons are stored in clear."""

    __tablename__ = "student_restrictions"

    school_id: str = Field(foreign_key="schools.id", primary_key=True, max_length=40)
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    version: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)
