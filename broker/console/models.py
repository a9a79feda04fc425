"""Tables of the console: browser sessions and enrolment invitations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class SessionStage(StrEnum):
    """How far a browser has got: password checked (enrol TOTP next), codes to show, in."""

    ENROL = "enrol"
    RECOVERY_CODES = "recovery_codes"
    SIGNED_IN = "signed_in"


class ConsoleSession(SQLModel, table=True):
    """A browser's sign-in.  The cookie holds a random token; only its digest is stored."""

    __tablename__ = "console_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    admin_id: str = Field(foreign_key="school_admins.id", index=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", max_length=40)
    stage: SessionStage = Field(sa_type=enum_column(SessionStage))
    csrf_token: str = Field(max_length=64)  # compared with every form's hidden field
    created_at: datetime = Field(sa_type=UTCDateTime)
    last_seen_at: datetime = Field(sa_type=UTCDateTime)


class AdminInvitation(SQLModel, table=True):
    """A one-time enrolment link for a new admin (there is no email: it is shown once)."""

    __tablename__ = "admin_invitations"

    token_hash: str = Field(primary_key=True, max_length=64)
    school_id: str = Field(foreign_key="schools.id", index=True, max_length=40)
    email: str = Field(max_length=254)
    created_by: str = Field(max_length=80)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
