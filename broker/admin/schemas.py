"""Request and response bodies of the school admin API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from broker.admin.consents import PartnerOverview, ReadsAfterEnd
from consent.access_log import entry_json
from consent.areas import SENSITIVE_AREAS
from consent.engine import AreaDecision, Decision
from consent.events import Audience, to_dict
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


FieldsIn = dict[str, list[Annotated[str, Field(max_length=64)]]]
FIELDS_DESCRIPTION = (
    "Approved fields per area; an area not named here gets its required fields "
    "(on a change: keeps its approval). A field the partner did not request is 422."
)


class GrantIn(BaseModel):
    partner_id: str = Field(max_length=40)
    areas: list[str] = Field(min_length=1, max_length=64)
    mode: Literal["read", "read_write"] = "read"
    fields: FieldsIn | None = Field(default=None, description=FIELDS_DESCRIPTION)


class ChangeAreasIn(BaseModel):
    areas: list[str] | None = Field(default=None, min_length=1, max_length=64)
    fields: FieldsIn | None = Field(default=None, description=FIELDS_DESCRIPTION)


IdList = list[Annotated[str, Field(min_length=1, max_length=128)]]


class AudienceIn(BaseModel):
    year_groups: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        description="Pupils in these year groups (as the MIS names them); null: no year rule"
    )
    include_students: IdList | None = Field(
        default=None, max_length=5000, description="Pupils shared by name; null: none"
    )
    exclude_students: IdList = Field(
        default_factory=list, max_length=5000, description="Pupils never shared"
    )

    def audience(self) -> Audience:
        return Audience(
            year_groups=None if self.year_groups is None else frozenset(self.year_groups),
            include_students=(
                None if self.include_students is None else frozenset(self.include_students)
            ),
            exclude_students=frozenset(self.exclude_students),
        )


class AudienceOut(BaseModel):
    year_groups: list[str] | None
    include_students: list[str] | None
    exclude_students: list[str]

    @classmethod
    def of(cls, audience: Audience) -> AudienceOut:
        return cls.model_validate(audience.as_dict())


class RestrictionIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class RestrictionOut(BaseModel):
    student_id: str
    restricted: bool
    reason: str | None = None
    at: str | None = None


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
    fields: dict[str, list[str]] | None = None
    request_version: int | None = None
    audience: AudienceOut | None = None


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
    fields: dict[str, list[str]] = Field(
        description="Approved fields per area (an area absent: every field)"
    )
    ending_fields: dict[str, dict[str, datetime]] = Field(
        description="Removed fields still served during their grace window, and until when"
    )
    audience: AudienceOut
    request_version: int | None = Field(description="The partner request version last reviewed")
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
            fields={a: sorted(f) for a, f in snap.fields.items()},
            ending_fields={a: dict(f) for a, f in snap.ending_fields.items()},
            audience=AudienceOut.of(snap.audience),
            request_version=snap.request_version,
            events=events,
        )


class ConsentListOut(BaseModel):
    data: list[ConsentOut]


class RequestedFieldOut(BaseModel):
    name: str
    required: bool
    reason: str | None
    approved: bool = Field(description="Shared with this partner by my consent now")
    pending: bool = Field(description="New in the partner's request since my last review")


class RequestedAreaOut(BaseModel):
    area: str
    reason: str | None
    sensitive: bool
    fields: list[RequestedFieldOut] = Field(default_factory=list)


class PartnerOut(BaseModel):
    partner_id: str
    name: str
    requested_areas: list[RequestedAreaOut]
    consent: ConsentOut | None
    request_version: int | None = None
    review_pending: bool = Field(
        default=False,
        description="The partner asks for fields or areas my consent has not reviewed yet; "
        "until an admin decides, the approval given keeps serving",
    )
    pending_fields: dict[str, list[str]] = Field(default_factory=dict)

    @classmethod
    def of(cls, item: PartnerOverview) -> PartnerOut:
        snap = None if item.consent is None else item.consent.snapshot
        request = item.request

        def approved(area: str, name: str) -> bool:
            if snap is None or item.consent is None or item.consent.status == "revoked":
                return False
            if area not in snap.areas and area not in snap.ending_areas:
                return False
            chosen = snap.fields.get(area)
            return chosen is None or name in chosen

        areas = []
        for r in item.requests:
            asked = None if request is None else request.areas.get(r.area)
            fields = [
                RequestedFieldOut(
                    name=f.name,
                    required=f.required,
                    reason=f.reason,
                    approved=approved(r.area, f.name),
                    pending=f.name in item.pending.get(r.area, ()),
                )
                for f in (asked.fields if asked is not None else ())
            ]
            areas.append(
                RequestedAreaOut(
                    area=r.area,
                    reason=r.reason,
                    sensitive=r.area in SENSITIVE_AREAS,
                    fields=fields,
                )
            )
        return cls(
            partner_id=item.partner.id,
            name=item.partner.name,
            requested_areas=areas,
            consent=None if item.consent is None else ConsentOut.of(item.consent),
            request_version=None if request is None else request.version,
            review_pending=bool(item.pending),
            pending_fields=dict(item.pending),
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
    fields: list[str] | None = Field(
        description="Fields approved at that moment (null: every field of the area)"
    )
    audience: AudienceOut | None = Field(description="The pupils shared at that moment")

    @classmethod
    def of(cls, decision: AreaDecision) -> AreaDecisionOut:
        allowed = decision.allowed
        return cls(
            area=decision.area,
            allowed=allowed,
            reason=decision.reason,
            consent_id=decision.consent_id,
            ends_at=decision.ends_at,
            in_grace=decision.in_grace,
            fields=None if decision.fields is None or not allowed else sorted(decision.fields),
            audience=AudienceOut.of(decision.audience) if allowed else None,
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
    fields: list[str] | None = Field(
        default=None, description="The fields served (null: every field of the area)"
    )

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
