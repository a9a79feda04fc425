"""Tables of the consent context: consents and their events, the access log, audit events.

Consent events and access-log entries are append-only: nothing here is ever updated except
the denormalised listing fields of `consents` and the per-school head of the log.  Foreign
keys name other contexts' tables by string so this package imports nothing of theirs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from consent.sqltypes import UTCDateTime, enum_column


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    ENDING = "ending"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class LogDecision(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"


class Consent(SQLModel, table=True):
    """One consent; its truth is its events, the other columns are kept for listing.

    `live_key` is "school:partner" while the consent may still allow anything and NULL once
    it has ended, so a unique constraint allows one live consent per pair even under races.
    """

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint("live_key", name="uq_consents_live_key"),
        Index("ix_consents_school_partner", "school_id", "partner_id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    school_id: str = Field(foreign_key="schools.id", max_length=40)
    partner_id: str = Field(foreign_key="partners.id", index=True, max_length=40)
    mode: str = Field(max_length=16)
    granted_at: datetime = Field(sa_type=UTCDateTime)
    granted_by: str = Field(max_length=80)
    status: ConsentStatus = Field(sa_type=enum_column(ConsentStatus))
    areas: list[str] = Field(sa_column=Column(JSON, nullable=False))
    ends_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_seq: int = 1
    updated_at: datetime = Field(sa_type=UTCDateTime)
    live_key: str | None = Field(default=None, max_length=82)
    finalized_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ConsentEventRow(SQLModel, table=True):
    """One event of a consent (`consent.events.to_dict` in `payload`); never updated."""

    __tablename__ = "consent_events"

    consent_id: str = Field(foreign_key="consents.id", primary_key=True, max_length=40)
    seq: int = Field(primary_key=True)
    type: str = Field(max_length=32)
    at: datetime = Field(sa_type=UTCDateTime)
    actor: str = Field(max_length=80)
    reason: str | None = Field(default=None, max_length=1000)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class AccessLogRow(SQLModel, table=True):
    """One partner read (or refusal), chained to the school's previous entry by `hash`."""

    __tablename__ = "access_log"
    __table_args__ = (
        Index("ix_access_log_school_at", "school_id", "at"),
        Index("ix_access_log_school_partner_at", "school_id", "partner_id", "at"),
    )

    school_id: str = Field(foreign_key="schools.id", primary_key=True, max_length=40)
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime = Field(sa_type=UTCDateTime)
    partner_id: str = Field(max_length=40)
    consent_id: str | None = Field(default=None, max_length=40)
    areas: list[str] = Field(sa_column=Column(JSON, nullable=False))
    record_count: int
    decision: LogDecision = Field(sa_type=enum_column(LogDecision))
    reason: str = Field(max_length=64)
    request_id: str = Field(max_length=128)
    # "read" or "write" (a partner's write-back); rows from before writes existed are reads.
    operation: str = Field(
        default="read", sa_column=Column(String(8), nullable=False, server_default="read")
    )
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # The fields served, when the consent approves fields one by one (else every field).
    fields: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class AccessLogHead(SQLModel, table=True):
    """The newest entry of a school's log: appends serialise on this row."""

    __tablename__ = "access_log_heads"

    school_id: str = Field(foreign_key="schools.id", primary_key=True, max_length=40)
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class AuditKeyRow(SQLModel, table=True):
    """The deployment's access-log key, sealed under the KEK (one row, id 1)."""

    __tablename__ = "audit_keys"

    id: int = Field(primary_key=True)
    key_sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(sa_type=UTCDateTime)


class AuditEvent(SQLModel, table=True):
    """A security-relevant event, e.g. a refused attempt to grant consent."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str = Field(max_length=120)
    action: str = Field(max_length=64)
    target: str | None = Field(default=None, max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
