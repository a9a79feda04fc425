"""A school admin's consent actions: the consent service, fed with what the broker knows.

The broker knows which areas a partner requested (and why), whether a school is closed,
and owns the outbox; the consent service knows the rules.  This module joins them for one
admin of one school, who never sees another school's consents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.clock import rfc3339
from broker.errors import (
    ConflictError,
    DomainError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
)
from broker.events.service import emit
from broker.ids import new_id
from broker.partners.models import Partner, PartnerAreaRequest, PartnerStatus
from broker.partners.projection import PUPIL_LINKED
from broker.partners.repository import PartnerRepository
from broker.partners.requests import PartnerRequest, RequestVersions, pending
from broker.schools.models import School, SchoolStatus
from broker.writes.service import cancel_for_consent
from consent.access_log import reads_between
from consent.engine import Decision
from consent.errors import ConsentError
from consent.events import Audience
from consent.models import AccessLogRow, Consent
from consent.service import ConsentService, ConsentView, RevocationWindow

_ERRORS: dict[str, type[DomainError]] = {
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "invalid": InvalidInputError,
    "unavailable": ServiceUnavailableError,
}


def to_domain_error(exc: ConsentError) -> DomainError:
    """The HTTP problem (or CLI line) for a consent-context error."""
    return _ERRORS[exc.kind](exc.detail, **exc.extra)


@dataclass(frozen=True, slots=True)
class PartnerOverview:
    partner: Partner
    requests: Sequence[PartnerAreaRequest]
    consent: ConsentView | None
    request: PartnerRequest | None = None  # the newest version, field by field
    pending: Mapping[str, list[str]] = field(default_factory=dict)  # area -> new fields


@dataclass(frozen=True, slots=True)
class ReadsAfterEnd:
    view: ConsentView
    windows: list[RevocationWindow]
    reads: list[AccessLogRow]


# A consent that stops (or will stop) allowing writes cancels the writes not yet delivered.
WRITE_CANCELLING_EVENTS = frozenset({"consent.revoked", "consent.suspended", "consent.ended"})


def consent_service(session: Session, grace: timedelta) -> ConsentService:
    """The consent service with the broker's ids and its outbox as the event sink."""

    def to_outbox(kind: str, consent: Consent, payload: dict[str, Any], now: datetime) -> None:
        if kind in WRITE_CANCELLING_EVENTS:
            cancel_for_consent(session, consent.school_id, consent.partner_id, now)
        emit(
            session,
            kind,
            school_id=consent.school_id,
            partner_id=consent.partner_id,
            payload=payload,
            now=now,
        )

    return ConsentService(session, grace=grace, on_event=to_outbox, new_id=new_id)


class SchoolConsents:
    """Every consent action of one admin of one school, at one instant."""

    def __init__(
        self, session: Session, *, school: School, actor: str, now: datetime, grace: timedelta
    ) -> None:
        self.school = school
        self.actor = actor
        self.now = now
        self.partners = PartnerRepository(session)
        self.service = consent_service(session, grace)

    @property
    def changed(self) -> set[tuple[str, str]]:
        return self.service.changed

    def grant(
        self,
        partner_id: str,
        areas: Sequence[str],
        mode: str,
        fields: Mapping[str, Sequence[str]] | None = None,
    ) -> ConsentView:
        """Grant; without `fields` every required field is approved and no optional one."""
        if self.school.status is not SchoolStatus.ACTIVE:
            raise ConflictError(f"school {self.school.id} is closed: no new consent can start")
        requested = self._requested(partner_id)
        request = RequestVersions(self.service.repo.session).current(partner_id)
        return self.service.grant(
            school_id=self.school.id,
            partner_id=partner_id,
            areas=areas,
            mode=mode,
            requested=requested,
            actor=self.actor,
            now=self.now,
            fields=fields,
            requested_fields=request.requested_fields(),
            request_version=request.version,
        )

    def change(
        self,
        consent_id: str,
        areas: Sequence[str] | None,
        fields: Mapping[str, Sequence[str]] | None,
    ) -> ConsentView:
        """Change areas and/or fields: the admin has reviewed the partner's newest request."""
        view = self.get(consent_id)
        partner_id = view.consent.partner_id
        request = RequestVersions(self.service.repo.session).current(partner_id)
        changed = self.service.change(
            consent_id,
            school_id=self.school.id,
            areas=areas,
            fields=fields,
            requested=self._requested(partner_id, active_only=False),
            requested_fields=request.requested_fields(),
            request_version=request.version,
            actor=self.actor,
            now=self.now,
        )
        removed = {
            area
            for area, before in view.snapshot.fields.items()
            if before - changed.snapshot.fields.get(area, frozenset())
        }
        self._data_updated(partner_id, removed)
        return changed

    def set_audience(self, consent_id: str, audience: Audience) -> ConsentView:
        view = self.service.set_audience(
            consent_id, school_id=self.school.id, audience=audience, actor=self.actor, now=self.now
        )
        areas = view.snapshot.areas | frozenset(view.snapshot.ending_areas)
        self._data_updated(view.consent.partner_id, areas & PUPIL_LINKED)
        return view

    def restriction_changed(self) -> None:
        """Every partner's view of pupil-linked areas may have changed: tell each one."""
        for view in self.all():
            if view.status == "revoked":
                continue
            areas = view.snapshot.areas | frozenset(view.snapshot.ending_areas)
            self._data_updated(view.consent.partner_id, areas & PUPIL_LINKED)
            self.service.changed.add((self.school.id, view.consent.partner_id))

    def _data_updated(self, partner_id: str, areas: Iterable[str]) -> None:
        """A `data.updated` per area for one partner: its next `updated_since` read of the
        area carries what left its view."""
        session = self.service.repo.session
        for area in sorted(areas):
            emit(
                session,
                "data.updated",
                school_id=self.school.id,
                partner_id=partner_id,
                area=area,
                payload={"school_id": self.school.id, "area": area, "as_of": rfc3339(self.now)},
                now=self.now,
            )

    def change_areas(self, consent_id: str, areas: Sequence[str]) -> ConsentView:
        view = self.get(consent_id)
        return self.service.change_areas(
            consent_id,
            school_id=self.school.id,
            areas=areas,
            requested=self._requested(view.consent.partner_id, active_only=False),
            actor=self.actor,
            now=self.now,
        )

    def revoke(self, consent_id: str, end_at: datetime, reason: str | None) -> ConsentView:
        return self.service.revoke(
            consent_id,
            school_id=self.school.id,
            end_at=end_at,
            actor=self.actor,
            now=self.now,
            reason=reason,
        )

    def suspend(self, consent_id: str, reason: str) -> ConsentView:
        return self.service.suspend(
            consent_id, school_id=self.school.id, reason=reason, actor=self.actor, now=self.now
        )

    def resume(self, consent_id: str, reason: str | None) -> ConsentView:
        return self.service.resume(
            consent_id, school_id=self.school.id, actor=self.actor, now=self.now, reason=reason
        )

    def get(self, consent_id: str) -> ConsentView:
        return self.service.get(consent_id, self.school.id, self.now)

    def all(self) -> list[ConsentView]:
        return self.service.for_school(self.school.id, self.now)

    def decision(self, partner_id: str, areas: Sequence[str], at: datetime) -> Decision:
        return self.service.decide_at(self.school.id, partner_id, areas, at)

    def partner_name(self, partner_id: str) -> str | None:
        partner = self.partners.get(partner_id)
        return None if partner is None else partner.name

    def overview(self) -> list[PartnerOverview]:
        """Every active partner, what it requests and why, and its consent with us."""
        versions = RequestVersions(self.service.repo.session)
        out = []
        for partner in self.partners.list():
            if partner.status is not PartnerStatus.ACTIVE:
                continue
            consent = self.service.current_for_pair(self.school.id, partner.id, self.now)
            request = versions.current(partner.id)
            waiting: dict[str, list[str]] = {}
            if consent is not None and consent.status != "revoked":
                reviewed = versions.at(partner.id, consent.snapshot.request_version)
                waiting = pending(request, reviewed)
            out.append(
                PartnerOverview(
                    partner, self.partners.requests(partner.id), consent, request, waiting
                )
            )
        return out

    def receipt(self, consent_id: str) -> dict[str, Any]:
        return build_receipt(self.service, self.partners, self.school, self.get(consent_id))

    def reads_after_end(self, consent_id: str) -> ReadsAfterEnd:
        view = self.get(consent_id)
        windows = self.service.revocation_windows(view)
        session = self.service.repo.session
        reads: dict[tuple[str, int], AccessLogRow] = {}
        for window in windows:
            for row in reads_between(
                session,
                self.school.id,
                view.consent.partner_id,
                window.end_at,
                window.revoked_at,
                window.areas,
            ):
                reads[(row.school_id, row.seq)] = row
        return ReadsAfterEnd(view, windows, [reads[k] for k in sorted(reads)])

    def _requested(self, partner_id: str, *, active_only: bool = True) -> dict[str, str | None]:
        partner = self.partners.get(partner_id)
        if partner is None or (active_only and partner.status is not PartnerStatus.ACTIVE):
            raise InvalidInputError(f"no active partner {partner_id!r}")
        return {r.area: r.reason for r in self.partners.requests(partner_id)}


PARTNER_VISIBLE_ADMIN = "school admin"


def build_receipt(
    service: ConsentService, partners: PartnerRepository, school: School, view: ConsentView
) -> dict[str, Any]:
    partner = partners.get(view.consent.partner_id)
    reasons = {r.area: r.reason for r in partners.requests(view.consent.partner_id)}
    return service.receipt(
        view,
        school={"id": school.id, "name": school.name, "dfe_number": school.dfe_number},
        partner={"id": view.consent.partner_id, "name": partner.name if partner else None},
        reasons=reasons,
        now=view.at,
    )


def partner_receipt(
    session: Session, *, school: School, partner_id: str, now: datetime, grace: timedelta
) -> dict[str, Any] | None:
    """The receipt of the partner's current (else latest) consent with the school.

    For the partner API (`GET /v1/schools/{id}/consent/receipt`); None: no consent ever.
    """
    service = consent_service(session, grace)
    view = service.current_for_pair(school.id, partner_id, now)
    if view is None:
        return None
    receipt = build_receipt(service, PartnerRepository(session), school, view)
    # A partner learns that a school admin acted, never which admin (their internal id).
    for event in receipt["events"]:
        if str(event.get("actor", "")).startswith("admin:"):
            event["actor"] = PARTNER_VISIBLE_ADMIN
    return receipt
