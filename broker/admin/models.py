"""Tables of admin authentication: sessions (token digests), failed logins, recovery codes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime


class AdminSession(SQLModel, table=True):
    """A login: the bearer token is stored only as its SHA-256 digest."""

    __tablename__ = "admin_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    admin_id: str = Field(foreign_key="school_admins.id", index=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class AdminLoginFailure(SQLModel, table=True):
    """One failed login for an email (known or not): the lockout counts these."""

    __tablename__ = "admin_login_failures"
    __table_args__ = (Index("ix_admin_login_failures_email_at", "email", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254)
    at: datetime = Field(sa_type=UTCDateTime)


class AdminRecoveryCode(SQLModel, table=True):
    """One of an admin's ten one-time recovery codes, stored as a digest."""

    __tablename__ = "admin_recovery_codes"

    code_hash: str = Field(primary_key=True, max_length=64)
    admin_id: str = Field(foreign_key="school_admins.id", index=True, max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
