"""Request and response bodies of the school admin API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from broker.admin.consents import PartnerOverview, ReadsAfterEnd
from consent.access_log import entry_json
from consent.areas import SENSITIVE_AREAS
from consent.engine import AreaDecision, Decision
from consent.events import to_dict
from consent.models import AccessLogRow
from consent.service import ConsentView


def _on_utc_timeline(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None
    return value


# An instant with an offset that has a place on the UTC timeline (0001-01-01T00:00:00+01:00
# has none: it is before datetime.min), so it can be stored and compared.
Instant = Annotated[AwareDatetime, AfterValidator(_on_utc_timeline)]


class LoginIn(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=256)
    totp: str = Field(max_length=10, description="The 6-digit code from the authenticator app")


class LoginOut(BaseModel):
    token: str
    school_id: str
    expires_at: datetime


class GrantIn(BaseModel):
    partner_id: str = Field(max_length=40)
    areas: list[str] = Field(min_length=1, max_length=64)
    mode: Literal["read", "read_write"] = "read"


class ChangeAreasIn(BaseModel):
    areas: list[str] = Field(min_length=1, max_length=64)


class RevokeIn(BaseModel):
    end_at: Instant = Field(
        description="When access ends; at or before now means at once, after the grace period"
    )
    reason: str | None = Field(default=None, max_length=1000)


class SuspendIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class ResumeIn(BaseModel):
    reason: str | None = Field(default=None, max_length=1000)


class ConsentEventOut(BaseModel):
    seq: int
    type: str
    at: datetime
    actor: str
    reason: str | None
    areas: list[str] | None = None
    end_at: datetime | None = None


class ConsentOut(BaseModel):
    consent_id: str
    partner_id: str
    status: Literal["active", "ending", "suspended", "revoked"]
    mode: str
    areas: list[str]
    ending_areas: dict[str, datetime] = Field(
        description="Removed areas still readable during their grace window, and until when"
    )
    granted_at: datetime
    ends_at: datetime | None
    events: list[ConsentEventOut] | None = None

    @classmethod
    def of(cls, view: ConsentView, *, with_events: bool = False) -> ConsentOut:
        snap = view.snapshot
        events = None
        if with_events:
            events = [
                ConsentEventOut.model_validate({"seq": seq, **to_dict(event)})
                for seq, event in enumerate(view.timeline.events, start=1)
            ]
        return cls(
            consent_id=view.consent.id,
            partner_id=view.consent.partner_id,
            status=snap.status,
            mode=view.consent.mode,
            areas=sorted(snap.areas),
            ending_areas=dict(snap.ending_areas),
            granted_at=view.consent.granted_at,
            ends_at=snap.ends_at,
            events=events,
        )


class ConsentListOut(BaseModel):
    data: list[ConsentOut]


class RequestedAreaOut(BaseModel):
    area: str
    reason: str | None
    sensitive: bool


class PartnerOut(BaseModel):
    partner_id: str
    name: str
    requested_areas: list[RequestedAreaOut]
    consent: ConsentOut | None

    @classmethod
    def of(cls, item: PartnerOverview) -> PartnerOut:
        return cls(
            partner_id=item.partner.id,
            name=item.partner.name,
            requested_areas=[
                RequestedAreaOut(area=r.area, reason=r.reason, sensitive=r.area in SENSITIVE_AREAS)
                for r in item.requests
            ],
            consent=None if item.consent is None else ConsentOut.of(item.consent),
        )


class PartnerListOut(BaseModel):
    data: list[PartnerOut]


class AreaDecisionOut(BaseModel):
    area: str
    allowed: bool
    reason: str
    consent_id: str | None
    ends_at: datetime | None
    in_grace: bool

    @classmethod
    def of(cls, decision: AreaDecision) -> AreaDecisionOut:
        return cls(
            area=decision.area,
            allowed=decision.allowed,
            reason=decision.reason,
            consent_id=decision.consent_id,
            ends_at=decision.ends_at,
            in_grace=decision.in_grace,
        )


class DecisionOut(BaseModel):
    allowed: bool
    reason: str
    consent_id: str | None
    at: datetime
    ends_at: datetime | None
    in_grace: bool
    missing_areas: list[str]
    areas: list[AreaDecisionOut]

    @classmethod
    def of(cls, decision: Decision, at: datetime) -> DecisionOut:
        return cls(
            allowed=decision.allowed,
            reason=decision.reason,
            consent_id=decision.consent_id,
            at=at,
            ends_at=decision.ends_at,
            in_grace=decision.in_grace,
            missing_areas=list(decision.missing_areas),
            areas=[AreaDecisionOut.of(d) for d in decision.per_area.values()],
        )


class AccessLogEntryOut(BaseModel):
    seq: int
    at: datetime
    partner_id: str
    consent_id: str | None
    areas: list[str]
    record_count: int
    decision: Literal["allowed", "denied"]
    operation: Literal["read", "write"] = Field(
        default="read", description="A partner's read, or a write to the MIS (write-back)"
    )
    reason: str
    request_id: str
    hash: str = Field(description="Hex of the entry's chained hash")

    @classmethod
    def of(cls, row: AccessLogRow) -> AccessLogEntryOut:
        return cls.model_validate(entry_json(row))


class AccessLogMeta(BaseModel):
    next_cursor: str | None


class AccessLogOut(BaseModel):
    data: list[AccessLogEntryOut]
    meta: AccessLogMeta


class RevocationWindowOut(BaseModel):
    end_at: datetime = Field(description="The end date the school chose")
    revoked_at: datetime = Field(description="When the school revoked")
    areas: list[str]


class ReadsAfterEndOut(BaseModel):
    consent_id: str
    partner_id: str
    windows: list[RevocationWindowOut]
    data: list[AccessLogEntryOut] = Field(
        description="Reads made after the chosen end date and before the revocation"
    )

    @classmethod
    def of(cls, result: ReadsAfterEnd) -> ReadsAfterEndOut:
        return cls(
            consent_id=result.view.consent.id,
            partner_id=result.view.consent.partner_id,
            windows=[
                RevocationWindowOut(end_at=w.end_at, revoked_at=w.revoked_at, areas=sorted(w.areas))
                for w in result.windows
            ],
            data=[AccessLogEntryOut.of(row) for row in result.reads],
        )


class ReceiptAreaOut(BaseModel):
    area: str
    reason: str | None
    ends_at: datetime | None


class ReceiptOut(BaseModel):
    """A consent receipt: what was agreed, between whom, and every change since."""

    receipt_id: str
    consent_id: str
    school: dict[str, Any]
    partner: dict[str, Any]
    mode: str
    areas: list[ReceiptAreaOut]
    status: str
    granted_at: datetime
    ends_at: datetime | None
    events: list[ConsentEventOut]
    issued_at: datetime
