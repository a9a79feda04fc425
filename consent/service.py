"""Consent operations: grant, change areas, revoke, suspend, resume, and the end of a consent.

Every operation loads the consent's events, checks the new event by folding the whole
history with it (the engine is the one authority on the rules), appends it, refreshes the
listing columns and reports the change through `on_event` in the same transaction (the
broker writes it to its outbox).  The service never commits; after the caller has
committed, `changed` names the (school, partner) pairs whose cached decisions are stale.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from consent.engine import (
    ConsentHistoryError,
    ConsentSnapshot,
    ConsentTimeline,
    Decision,
    decide,
    fold,
    revocation_end,
    snapshot_at,
)
from consent.errors import ConsentConflictError, ConsentInvalidError, ConsentNotFoundError
from consent.events import (
    MODES,
    AreasChanged,
    Audience,
    AudienceChanged,
    ConsentEvent,
    FieldsChanged,
    Granted,
    Resumed,
    Revoked,
    Suspended,
    format_instant,
    to_dict,
)
from consent.models import Consent, ConsentStatus
from consent.repository import ConsentRepository, live_key

EventSink: TypeAlias = Callable[[str, Consent, dict[str, Any], datetime], None]
# What a partner requests, per area: field name -> required.
RequestedFields: TypeAlias = Mapping[str, Mapping[str, bool]]
MAX_REASON_LENGTH = 1000


def _random_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(13)}"


def _ignore(_type: str, _consent: Consent, _payload: dict[str, Any], _now: datetime) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ConsentView:
    """A consent row, its folded history and how it stands at `at`."""

    consent: Consent
    timeline: ConsentTimeline
    snapshot: ConsentSnapshot
    at: datetime

    @property
    def status(self) -> str:
        return self.snapshot.status


@dataclass(frozen=True, slots=True)
class RevocationWindow:
    """A retrospective revocation: reads in [end_at, revoked_at] came after the school's end."""

    end_at: datetime
    revoked_at: datetime
    areas: frozenset[str]


class ConsentService:
    def __init__(
        self,
        session: Session,
        *,
        grace: timedelta,
        on_event: EventSink | None = None,
        new_id: Callable[[str], str] = _random_id,
    ) -> None:
        self.repo = ConsentRepository(session)
        self.grace = grace
        self.on_event = on_event or _ignore
        self.new_id = new_id
        self.changed: set[tuple[str, str]] = set()  # (school_id, partner_id)

    # -- reads --------------------------------------------------------------------------

    def get(self, consent_id: str, school_id: str, at: datetime) -> ConsentView:
        """One consent of this school; another school's consent is "not found"."""
        consent = self.repo.get(consent_id)
        if consent is None or consent.school_id != school_id:
            raise ConsentNotFoundError(f"no consent {consent_id!r}")
        return self._view(consent, self.repo.events(consent.id), at)

    def for_school(self, school_id: str, at: datetime) -> list[ConsentView]:
        consents = self.repo.for_school(school_id)
        events = self.repo.events_of(c.id for c in consents)
        return [self._view(c, events[c.id], at) for c in consents]

    def current_for_pair(self, school_id: str, partner_id: str, at: datetime) -> ConsentView | None:
        """The live consent of the pair, else the most recent one, else None."""
        consents = self.repo.for_pair(school_id, partner_id)
        if not consents:
            return None
        live = [c for c in consents if c.live_key is not None]
        chosen = (live or list(consents))[-1]
        return self._view(chosen, self.repo.events(chosen.id), at)

    def decide_at(
        self, school_id: str, partner_id: str, areas: Iterable[str], at: datetime
    ) -> Decision:
        """The decision as it stood at `at`, from the stored history (no cache)."""
        return decide(self.repo.timelines(school_id, partner_id, self.grace), list(areas), at)

    def revocation_windows(self, view: ConsentView) -> list[RevocationWindow]:
        """The retrospective revocations of a consent, with the areas each one covered."""
        windows = []
        for event in view.timeline.events:
            if isinstance(event, Revoked) and event.end_at <= event.at:
                snap = snapshot_at(view.timeline, event.at)
                areas = snap.areas | frozenset(snap.ending_areas)
                windows.append(RevocationWindow(event.end_at, event.at, areas))
        return windows

    # -- changes ------------------------------------------------------------------------

    def grant(
        self,
        *,
        school_id: str,
        partner_id: str,
        areas: Collection[str],
        mode: str,
        requested: Collection[str],
        actor: str,
        now: datetime,
        fields: Mapping[str, Collection[str]] | None = None,
        requested_fields: RequestedFields | None = None,
        request_version: int | None = None,
    ) -> ConsentView:
        chosen = _check_areas(areas, requested)
        approved = (
            None
            if requested_fields is None
            else _check_fields(chosen, fields or {}, requested_fields, {})
        )
        if mode not in MODES:
            raise ConsentInvalidError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._retire_ended(school_id, partner_id, now)
        consent_id = self.new_id("con")
        event = Granted(
            consent_id=consent_id,
            at=now,
            actor=actor,
            partner_id=partner_id,
            school_id=school_id,
            areas=chosen,
            mode=mode,  # checked against MODES above
            fields=approved,
            request_version=request_version if approved is not None else None,
        )
        timeline = _fold([event], self.grace)
        consent = Consent(
            id=consent_id,
            school_id=school_id,
            partner_id=partner_id,
            mode=mode,
            granted_at=now,
            granted_by=actor,
            status=ConsentStatus.ACTIVE,
            areas=sorted(chosen),
            updated_at=now,
            live_key=live_key(school_id, partner_id),
        )
        try:
            self.repo.add(consent, event)
        except IntegrityError as exc:
            raise ConsentConflictError(
                "the partner was granted a consent by someone else at the same time"
            ) from exc
        view = self._refresh(consent, timeline, now)
        self._announce("consent.granted", view, now)
        return view

    def change_areas(
        self,
        consent_id: str,
        *,
        school_id: str,
        areas: Collection[str],
        requested: Collection[str],
        actor: str,
        now: datetime,
    ) -> ConsentView:
        chosen = _check_areas(areas, requested)
        consent, view = self._load_live(consent_id, school_id, now)
        if chosen == view.snapshot.areas:
            return view  # nothing changes, so nothing is recorded
        event = AreasChanged(consent_id=consent.id, at=now, actor=actor, areas=chosen)
        return self._append(consent, view, event, "consent.updated", now)

    def change(
        self,
        consent_id: str,
        *,
        school_id: str,
        areas: Collection[str] | None,
        fields: Mapping[str, Collection[str]] | None,
        requested: Collection[str],
        requested_fields: RequestedFields,
        request_version: int | None,
        actor: str,
        now: datetime,
    ) -> ConsentView:
        """Change areas and/or approved fields: one review of the partner's request.

        Areas added without fields get their required fields; fields given replace that
        area's approval; removed fields follow the revocation rules (readable in grace).
        """
        consent, view = self._load_live(consent_id, school_id, now)
        chosen = view.snapshot.areas if areas is None else _check_areas(areas, requested)
        current = {a: view.snapshot.fields[a] for a in chosen if a in view.snapshot.fields}
        approved = _check_fields(chosen, fields or {}, requested_fields, current)
        events: list[ConsentEvent] = []
        if chosen != view.snapshot.areas:
            events.append(AreasChanged(consent_id=consent.id, at=now, actor=actor, areas=chosen))
        changed = {a: f for a, f in approved.items() if view.snapshot.fields.get(a) != f}
        if changed or request_version != view.snapshot.request_version:
            events.append(
                FieldsChanged(
                    consent_id=consent.id,
                    at=now,
                    actor=actor,
                    fields=changed,
                    request_version=request_version,
                )
            )
        for event in events:
            view = self._append(consent, view, event, "consent.updated", now)
        return view

    def set_audience(
        self, consent_id: str, *, school_id: str, audience: Audience, actor: str, now: datetime
    ) -> ConsentView:
        consent, view = self._load_live(consent_id, school_id, now)
        if audience == view.snapshot.audience:
            return view
        event = AudienceChanged(consent_id=consent.id, at=now, actor=actor, audience=audience)
        return self._append(consent, view, event, "consent.updated", now)

    def revoke(
        self,
        consent_id: str,
        *,
        school_id: str,
        end_at: datetime,
        actor: str,
        now: datetime,
        reason: str | None = None,
    ) -> ConsentView:
        if end_at.utcoffset() is None:
            raise ConsentInvalidError("end_at must carry a time zone offset")
        consent, view = self._load_live(consent_id, school_id, now)
        effective = revocation_end(end_at, now, self.grace)
        current = view.snapshot.ends_at  # the revocation end known now, if any
        if current is not None and effective > current:
            raise ConsentInvalidError(
                f"the consent already ends at {format_instant(current)}; an end can be "
                f"brought forward, never pushed back (this one would end at "
                f"{format_instant(effective)})",
                ends_at=format_instant(current),
            )
        event = Revoked(
            consent_id=consent.id, at=now, actor=actor, end_at=end_at, reason=_reason(reason)
        )
        return self._append(consent, view, event, "consent.revoked", now)

    def suspend(
        self, consent_id: str, *, school_id: str, reason: str, actor: str, now: datetime
    ) -> ConsentView:
        text = _reason(reason)
        if text is None:
            raise ConsentInvalidError("a suspension needs a reason")
        consent, view = self._load_live(consent_id, school_id, now)
        if view.status == "suspended":
            raise ConsentConflictError(f"consent {consent.id} is already suspended")
        event = Suspended(consent_id=consent.id, at=now, actor=actor, reason=text)
        return self._append(consent, view, event, "consent.suspended", now)

    def resume(
        self,
        consent_id: str,
        *,
        school_id: str,
        actor: str,
        now: datetime,
        reason: str | None = None,
    ) -> ConsentView:
        consent, view = self._load_live(consent_id, school_id, now)
        if view.status != "suspended":
            raise ConsentConflictError(f"consent {consent.id} is not suspended")
        event = Resumed(consent_id=consent.id, at=now, actor=actor, reason=_reason(reason))
        return self._append(consent, view, event, "consent.resumed", now)

    def finalize_ended(self, now: datetime) -> list[ConsentView]:
        """Record the end of every consent whose end has passed, once each (idempotent)."""
        finished = []
        for consent in self.repo.ended_unfinalized(now):
            view = self._view(consent, self.repo.events(consent.id), now)
            if view.status != "revoked" or not self.repo.claim_finalization(consent.id, now):
                continue
            self._finish(consent, view, now)
            finished.append(view)
        return finished

    # -- receipts -----------------------------------------------------------------------

    def receipt(
        self,
        view: ConsentView,
        *,
        school: Mapping[str, Any],
        partner: Mapping[str, Any],
        reasons: Mapping[str, str | None],
        now: datetime,
    ) -> dict[str, Any]:
        """The consent receipt both sides can fetch: what was agreed, by whom, and when."""
        consent, snap = view.consent, view.snapshot
        areas = sorted(snap.areas | frozenset(snap.ending_areas))
        return {
            "receipt_id": f"rcpt_{consent.id.removeprefix('con_')}_{consent.last_seq}",
            "consent_id": consent.id,
            "school": dict(school),
            "partner": dict(partner),
            "mode": consent.mode,
            "areas": [
                {
                    "area": area,
                    "reason": reasons.get(area),
                    "ends_at": _instant(snap.ending_areas.get(area)),
                }
                for area in areas
            ],
            "status": snap.status,
            "granted_at": format_instant(consent.granted_at),
            "ends_at": _instant(snap.ends_at),
            "events": [_event_summary(seq, e) for seq, e in enumerate(view.timeline.events, 1)],
            "issued_at": format_instant(now),
        }

    # -- internals ----------------------------------------------------------------------

    def _view(self, consent: Consent, events: list[ConsentEvent], at: datetime) -> ConsentView:
        timeline = fold(events, self.grace)
        snapshot = snapshot_at(timeline, max(at, consent.granted_at))
        return ConsentView(consent, timeline, snapshot, at)

    def _load_live(
        self, consent_id: str, school_id: str, now: datetime
    ) -> tuple[Consent, ConsentView]:
        consent = self.repo.get(consent_id, for_update=True)
        if consent is None or consent.school_id != school_id:
            raise ConsentNotFoundError(f"no consent {consent_id!r}")
        view = self._view(consent, self.repo.events(consent.id), now)
        if view.status == "revoked":
            raise ConsentConflictError(f"consent {consent.id} has ended")
        return consent, view

    def _append(
        self, consent: Consent, view: ConsentView, event: ConsentEvent, kind: str, now: datetime
    ) -> ConsentView:
        timeline = _fold([*view.timeline.events, event], self.grace)
        consent_id = consent.id  # a failed flush expires `consent`: reading it then would fail
        try:
            self.repo.append(consent, event)
        except IntegrityError as exc:
            raise ConsentConflictError(
                f"consent {consent_id} was changed at the same time; retry"
            ) from exc
        new_view = self._refresh(consent, timeline, now)
        self._announce(kind, new_view, now, event)
        return new_view

    def _refresh(self, consent: Consent, timeline: ConsentTimeline, now: datetime) -> ConsentView:
        """Bring the listing columns in line with the history."""
        snap = snapshot_at(timeline, now)
        consent.status = ConsentStatus(snap.status)
        consent.areas = sorted(snap.areas)
        consent.ends_at = timeline.ends_at  # the end as the whole history plays out
        consent.updated_at = now
        self.repo.session.add(consent)
        self.repo.session.flush()
        self.changed.add((consent.school_id, consent.partner_id))
        return ConsentView(consent, timeline, snap, now)

    def _retire_ended(self, school_id: str, partner_id: str, now: datetime) -> None:
        """Free the pair for a new grant if its live consent has in fact ended; else 409."""
        live = self.repo.live_for_pair(school_id, partner_id)
        if live is None:
            return
        view = self._view(live, self.repo.events(live.id), now)
        if view.status != "revoked":
            raise ConsentConflictError(
                f"the partner already holds consent {live.id} ({view.status}); change or "
                "revoke it instead",
                consent_id=live.id,
            )
        if self.repo.claim_finalization(live.id, now):
            self._finish(live, view, now)

    def _finish(self, consent: Consent, view: ConsentView, now: datetime) -> None:
        consent.finalized_at, consent.live_key = now, None
        self._refresh(consent, view.timeline, now)
        decision = view.timeline.decision(next(iter(view.timeline.areas)), now)
        payload = {
            "consent_id": consent.id,
            "ended_at": _instant(view.timeline.ends_at),
            "reason": decision.reason,
        }
        self.on_event("consent.ended", consent, payload, now)

    def _announce(
        self, kind: str, view: ConsentView, now: datetime, event: ConsentEvent | None = None
    ) -> None:
        snap = view.snapshot
        payload: dict[str, Any] = {
            "consent_id": view.consent.id,
            "status": snap.status,
            "areas": sorted(snap.areas),
            "mode": view.consent.mode,
            "granted_at": format_instant(view.consent.granted_at),
            "ends_at": _instant(snap.ends_at),
            "ending_areas": {a: format_instant(t) for a, t in snap.ending_areas.items()},
        }
        if snap.fields:
            payload["fields"] = {a: sorted(f) for a, f in snap.fields.items()}
        if not snap.audience.everyone:
            payload["audience"] = snap.audience.as_dict()
        if event is not None:
            payload["event"] = to_dict(event)
        self.on_event(kind, view.consent, payload, now)


def _check_areas(areas: Collection[str], requested: Collection[str]) -> frozenset[str]:
    chosen = frozenset(areas)
    if not chosen:
        raise ConsentInvalidError("choose at least one area")
    extra = sorted(chosen - frozenset(requested))
    if extra:
        raise ConsentInvalidError(
            f"the partner did not request: {', '.join(extra)}", extra_areas=extra
        )
    return chosen


def _check_fields(
    areas: frozenset[str],
    fields: Mapping[str, Collection[str]],
    requested: RequestedFields,
    current: Mapping[str, frozenset[str]],
) -> dict[str, frozenset[str]]:
    """The approved fields of every area: as given, else as now, else the required ones.

    A field the partner did not request, or fields for an area not chosen, are invalid.
    """
    stray = sorted(set(fields) - areas)
    if stray:
        raise ConsentInvalidError(
            f"fields given for area(s) not chosen: {', '.join(stray)}", extra_areas=stray
        )
    out: dict[str, frozenset[str]] = {}
    for area in sorted(areas):
        asked = requested.get(area, {})
        if area in fields:
            given = fields[area]
            if isinstance(given, str):
                raise ConsentInvalidError(f"fields of {area} must be a list of names")
            chosen = frozenset(given)
            extra = sorted(chosen - set(asked))
            if extra:
                raise ConsentInvalidError(
                    f"the partner did not request field(s) of {area}: {', '.join(extra)}",
                    extra_fields={area: extra},
                )
            out[area] = chosen
        elif area in current:
            out[area] = current[area]
        else:
            out[area] = frozenset(name for name, required in asked.items() if required)
    return out


def _fold(events: list[ConsentEvent], grace: timedelta) -> ConsentTimeline:
    try:
        return fold(events, grace)
    except ConsentHistoryError as exc:
        raise ConsentInvalidError(str(exc)) from exc


def _reason(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    if len(text) > MAX_REASON_LENGTH:
        raise ConsentInvalidError(f"a reason is at most {MAX_REASON_LENGTH} characters")
    return text.strip()


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def _event_summary(seq: int, event: ConsentEvent) -> dict[str, Any]:
    data = to_dict(event)
    data.pop("consent_id", None)
    data.pop("school_id", None)
    data.pop("partner_id", None)
    return {"seq": seq, **data}
