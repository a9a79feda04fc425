"""The consent engine: fold a consent's events into a timeline, then decide on it cheaply.

`fold` replays a consent's history once and cuts time into segments inside which every
decision is constant (segments start at events and at derived instants: a scheduled end, a
grace window closing, a suspension expiring).  Each segment holds ready-made decisions, so
`decide` is a binary search and a dict lookup: no folding and no allocation per call for
the common one-area read.

Decisions are "as it stood at T": the decision at T depends only on events at or before T.
That matters for `ends_at`: if a later revocation shortened the end, a decision at a time
before that revocation still reports the end that was known then (what the partner was
told in `X-Consent-Ends-At`).  Whether access was allowed never depends on later events,
because every rule only acts from its event's time onwards.

Rules, from DESIGN.md, and the choices made where it is silent:

- Revoke with `end_at` after the revocation: access ends exactly at `end_at` (allowed while
  t < end_at); until then decisions are "granted" with `ends_at` set, not in grace.
- Revoke with `end_at` at or before the revocation (retrospective): access ends at
  `revoked_at + grace` and is "in_grace" from `revoked_at`.
- Revoking an already-ending consent: the earliest end wins (an end can be brought
  forward, never pushed back).  A retrospective revocation puts the consent in grace from
  its own time even when an earlier scheduled end remains the binding one: the admin has
  said access should already be over, so no new extraction starts.
- Narrowing the areas revokes the removed areas "now": `end_at` = the change time, which is
  retrospective, so they stay readable (in grace) until `changed_at + grace`.  Re-adding an
  area during its grace window grants it afresh from that change (the grace ends there).
  An added area starts at the change time.  Areas may still change while a consent is
  ending or suspended; they share its end.
- Field approval (`Granted.fields`, `FieldsChanged`) narrows what an allowed read holds:
  a removed field is revoked like a removed area (readable until `changed_at + grace`), an
  added one is shared from the change.  An area with no field list shares every field (a
  grant from before field-level approval), and so does a list naming every field.  The
  audience (`AudienceChanged`) acts at once, with no grace.  Both ride on the allowed
  decisions of each segment, so deciding costs what it did.
- Suspension denies everything from its time, with no grace; a resume restores whatever
  the consent allowed.  A suspension not resumed within `SUSPENSION_LIMIT` ends the consent
  at `suspended_at + SUSPENSION_LIMIT` ("suspension_expired"), unless a revocation ends it
  no later than that ("revoked").
- Once a consent has ended nothing can follow: later events are rejected by `fold`.
- Precedence when several things apply to one area at T: consent-level denials
  (not_yet_granted, revoked, suspension_expired, suspended) before area-level ones (ended:
  removed and its grace is over; not_granted: never part of the consent).
- `ends_at` is only set on allowed decisions: the instant that access will end, as known.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from consent.areas import UnknownAreaError, get_area
from consent.events import (
    EVERYONE,
    MODES,
    AreasChanged,
    Audience,
    AudienceChanged,
    ConsentEvent,
    FieldsChanged,
    Granted,
    Mode,
    Revoked,
    Suspended,
)

SUSPENSION_LIMIT: Final = timedelta(days=30)
MAX_GRACE: Final = timedelta(hours=72)
DEFAULT_GRACE: Final = MAX_GRACE

Reason: TypeAlias = Literal[
    "granted",
    "in_grace",
    "not_granted",
    "no_consent",
    "revoked",
    "suspended",
    "suspension_expired",
    "ended",
    "not_yet_granted",
    "write_not_permitted",
]
Status: TypeAlias = Literal["active", "ending", "suspended", "revoked"]
Operation: TypeAlias = Literal["read", "write"]

_BEGINNING: Final = datetime.min.replace(tzinfo=UTC)
_END_OF_TIME: Final = datetime.max.replace(tzinfo=UTC)


class ConsentHistoryError(ValueError):
    """A consent's event history breaks the rules and cannot be folded."""


@dataclass(frozen=True, slots=True)
class AreaDecision:
    area: str
    allowed: bool
    reason: Reason
    consent_id: str | None
    ends_at: datetime | None = None
    in_grace: bool = False
    # What an allowed read may hold: the approved fields (None: every field of the area,
    # a grant from before field-level approval) and the pupils shared.
    fields: frozenset[str] | None = None
    audience: Audience = EVERYONE


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: Reason
    consent_id: str | None
    per_area: Mapping[str, AreaDecision]
    ends_at: datetime | None
    in_grace: bool
    missing_areas: tuple[str, ...]
    # Of a one-area decision (the read path's): that area's approved fields and audience.
    fields: frozenset[str] | None = None
    audience: Audience = EVERYONE


@dataclass(frozen=True, slots=True)
class Interval:
    """[start, end); `end` None means open-ended."""

    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class ConsentSnapshot:
    """The consent as it stood at one instant, for the admin and partner views."""

    consent_id: str
    status: Status
    granted_at: datetime
    mode: Mode
    areas: frozenset[str]
    ends_at: datetime | None
    ending_areas: Mapping[str, datetime]  # removed areas still readable in grace, to when
    # Approved fields per area (areas absent: every field), removed fields still readable
    # in grace (area -> field -> until when), the pupils shared and the request reviewed.
    fields: Mapping[str, frozenset[str]] = field(default_factory=dict)
    ending_fields: Mapping[str, Mapping[str, datetime]] = field(default_factory=dict)
    audience: Audience = EVERYONE
    request_version: int | None = None


@dataclass(frozen=True, slots=True)
class _Segment:
    decisions: Mapping[str, Decision]  # one-area read decisions for every area ever named
    fallback: Reason  # the reason for any other area
    snapshot: ConsentSnapshot | None  # None before the grant

    def same_as(self, other: _Segment) -> bool:
        return (self.decisions, self.fallback, self.snapshot) == (
            other.decisions,
            other.fallback,
            other.snapshot,
        )


@dataclass(frozen=True, slots=True, eq=False)
class ConsentTimeline:
    """A folded consent: build with `fold`, query with `decide`, `valid_until`, `status_at`.

    `allowed` holds, per area ever granted, the intervals during which reads are allowed;
    `grace_windows` the parts of those in grace; `suspensions` the suspended intervals.
    They are derived from the segments and are there for inspection and auditing.
    """

    consent_id: str
    partner_id: str
    school_id: str
    mode: Mode
    grace: timedelta
    granted_at: datetime
    events: tuple[ConsentEvent, ...]
    starts: tuple[datetime, ...] = field(repr=False)
    segments: tuple[_Segment, ...] = field(repr=False)
    allowed: Mapping[str, tuple[Interval, ...]] = field(repr=False)
    grace_windows: Mapping[str, tuple[Interval, ...]] = field(repr=False)
    suspensions: tuple[Interval, ...] = field(repr=False)

    @property
    def areas(self) -> frozenset[str]:
        """The areas the consent names once its whole known history has played out."""
        return self._last_snapshot().areas

    @property
    def ends_at(self) -> datetime | None:
        """When the consent ends (or ended), as far as its history tells."""
        return self._last_snapshot().ends_at

    def _last_snapshot(self) -> ConsentSnapshot:
        snapshot = self.segments[-1].snapshot
        assert snapshot is not None  # fold always appends segments after the grant
        return snapshot

    def _segment_at(self, at: datetime) -> tuple[int, _Segment]:
        index = bisect_right(self.starts, at) - 1
        return index, self.segments[index]

    def decision(self, area: str, at: datetime) -> Decision:
        """The one-area read decision at `at`; the hot path."""
        segment = self.segments[bisect_right(self.starts, at) - 1]
        found = segment.decisions.get(area)
        if found is not None:
            return found
        return _single(_refused(area, segment.fallback, self.consent_id))

    def area_decision(self, area: str, at: datetime, operation: Operation) -> AreaDecision:
        decision = self.decision(area, at).per_area[area]
        if operation == "write":
            if decision.allowed and self.mode != "read_write":
                return _refused(area, "write_not_permitted", self.consent_id)
        elif operation != "read":
            raise ValueError(f"unknown operation {operation!r}")
        return decision


# ---------------------------------------------------------------------------------------
# Queries


def decide(
    timelines: Sequence[ConsentTimeline],
    areas: Iterable[str],
    at: datetime,
    operation: Operation = "read",
) -> Decision:
    """May the partner do `operation` on `areas` of the school at `at`?

    `timelines` are all the partner's consents with this one school (usually one; a new
    grant after a revocation adds another).  A single string is taken as one area.  Per
    area the most generous consent wins; the whole request is allowed only if every area
    is.  Unknown area names are simply not granted.
    """
    if at.tzinfo is None:
        raise ValueError("decision time must be timezone-aware")
    names = (areas,) if isinstance(areas, str) else tuple(dict.fromkeys(areas))
    if not names:
        raise ValueError("decide needs at least one area")
    if len(timelines) == 1:
        only = timelines[0]
        if len(names) == 1 and (
            operation == "read" or (operation == "write" and only.mode == "read_write")
        ):
            return only.decision(names[0], at)
        return _combine({name: only.area_decision(name, at, operation) for name in names})
    _check_same_pair(timelines)
    return _combine({name: _best(timelines, name, at, operation) for name in names})


def revocation_end(end_at: datetime, revoked_at: datetime, grace: timedelta) -> datetime:
    """When access ends after a revocation made at `revoked_at` with end date `end_at`.

    A future end date is kept exactly; one at or before the revocation (retrospective) ends
    access at the revocation plus the grace.  The console shows this before it is confirmed.
    """
    return end_at if end_at > revoked_at else revoked_at + grace


def valid_until(timeline: ConsentTimeline, at: datetime) -> datetime | None:
    """The next instant at which any decision on this consent may change; None if never.

    Valid for the history the timeline was folded from: a new event needs a new fold.
    """
    index, _ = timeline._segment_at(at)
    return timeline.starts[index + 1] if index + 1 < len(timeline.starts) else None


def snapshot_at(timeline: ConsentTimeline, at: datetime) -> ConsentSnapshot:
    _, segment = timeline._segment_at(at)
    if segment.snapshot is None:
        raise ValueError(f"consent {timeline.consent_id} was not granted yet at {at}")
    return segment.snapshot


def status_at(timeline: ConsentTimeline, at: datetime) -> Status:
    return snapshot_at(timeline, at).status


def _check_same_pair(timelines: Sequence[ConsentTimeline]) -> None:
    if len({(t.partner_id, t.school_id) for t in timelines}) > 1:
        raise ValueError("decide takes the consents of one partner with one school")


def _best(
    timelines: Sequence[ConsentTimeline], area: str, at: datetime, operation: Operation
) -> AreaDecision:
    if not timelines:
        return _refused(area, "no_consent", None)
    candidates = [(t.area_decision(area, at, operation), t) for t in timelines]
    return max(candidates, key=lambda c: _rank(c[0], c[1], at))[0]


def _rank(decision: AreaDecision, timeline: ConsentTimeline, at: datetime) -> tuple[int, datetime]:
    """Order consents for one area: full access, then longest grace, then latest denial."""
    if decision.allowed and not decision.in_grace:
        return 3, decision.ends_at or _END_OF_TIME
    if decision.allowed:
        return 2, decision.ends_at or _END_OF_TIME
    if timeline.granted_at <= at:
        return 1, timeline.granted_at
    return 0, _BEGINNING


def _combine(per_area: dict[str, AreaDecision]) -> Decision:
    """One decision for many areas (takes `per_area` over); the first refusal explains it."""
    missing: list[str] = []
    refused = in_grace = None
    ends_at: datetime | None = None
    for decision in per_area.values():
        if not decision.allowed:
            missing.append(decision.area)
            refused = refused or decision
        elif decision.in_grace:
            in_grace = in_grace or decision
        if decision.ends_at is not None and (ends_at is None or decision.ends_at < ends_at):
            ends_at = decision.ends_at
    lead = refused or in_grace or next(iter(per_area.values()))
    return Decision(
        allowed=not missing,
        reason=lead.reason,
        consent_id=lead.consent_id,
        per_area=MappingProxyType(per_area),
        ends_at=ends_at,
        in_grace=in_grace is not None,
        missing_areas=tuple(missing),
        fields=lead.fields if len(per_area) == 1 else None,
        audience=lead.audience,
    )


def _single(decision: AreaDecision) -> Decision:
    return _combine({decision.area: decision})


def _refused(area: str, reason: Reason, consent_id: str | None) -> AreaDecision:
    return AreaDecision(area, False, reason, consent_id)


# ---------------------------------------------------------------------------------------
# Folding


def fold(events: Sequence[ConsentEvent], grace: timedelta = DEFAULT_GRACE) -> ConsentTimeline:
    """Replay one consent's events into a timeline; malformed histories raise."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise ConsentHistoryError(f"grace must be between 0 and {MAX_GRACE}, got {grace}")
    grant = _check_shape(events)
    named = sorted(frozenset[str]().union(*(_areas_of(e) for e in events)))
    starts, segments = _cut(grant, events, grace, named)
    columns = {a: [s.decisions[a] for s in segments] for a in named}
    return ConsentTimeline(
        consent_id=grant.consent_id,
        partner_id=grant.partner_id,
        school_id=grant.school_id,
        mode=grant.mode,
        grace=grace,
        granted_at=grant.at,
        events=tuple(events),
        starts=starts,
        segments=segments,
        allowed=MappingProxyType(
            {a: _spans(starts, [d.allowed for d in ds]) for a, ds in columns.items()}
        ),
        grace_windows=MappingProxyType(
            {a: _spans(starts, [d.in_grace for d in ds]) for a, ds in columns.items()}
        ),
        suspensions=_spans(starts, [s.fallback == "suspended" for s in segments]),
    )


def _cut(
    grant: Granted, events: Sequence[ConsentEvent], grace: timedelta, named: Sequence[str]
) -> tuple[tuple[datetime, ...], tuple[_Segment, ...]]:
    """Replay the events, cutting time wherever a decision may change."""
    state = _State.from_grant(grant)
    not_yet = {a: _single(_refused(a, "not_yet_granted", grant.consent_id)) for a in named}
    starts = [_BEGINNING]
    segments = [_Segment(MappingProxyType(not_yet), "not_yet_granted", None)]
    for index, event in enumerate(events):
        if index:
            state.apply(event, grace)
        stop = events[index + 1].at if index + 1 < len(events) else None
        for start, segment in _segments_between(state, event.at, stop, named):
            if not segment.same_as(segments[-1]):
                starts.append(start)
                segments.append(segment)
    return tuple(starts), tuple(segments)


def _check_shape(events: Sequence[ConsentEvent]) -> Granted:
    """The checks that need no replay: first a grant, one consent, time order, areas."""
    if not events or not isinstance(events[0], Granted):
        raise ConsentHistoryError("a consent history starts with its grant")
    grant = events[0]
    if grant.mode not in MODES:
        raise ConsentHistoryError(f"unknown mode {grant.mode!r}")
    for before, event in pairwise(events):
        if event.consent_id != grant.consent_id:
            raise ConsentHistoryError(f"event of consent {event.consent_id} in {grant.consent_id}")
        if event.at < before.at:
            raise ConsentHistoryError(f"events out of time order at {event.at}")
    for event in events:
        _check_areas(event)
    return grant


def _areas_of(event: ConsentEvent) -> frozenset[str]:
    return event.areas if isinstance(event, Granted | AreasChanged) else frozenset()


def _check_areas(event: ConsentEvent) -> None:
    if isinstance(event, Granted | AreasChanged) and not event.areas:
        raise ConsentHistoryError(f"{type(event).__name__} at {event.at} names no area")
    fields = event.fields if isinstance(event, Granted | FieldsChanged) else None
    try:
        for name in _areas_of(event):
            get_area(name)
        for name, chosen in (fields or {}).items():
            unknown = chosen - set(get_area(name).field_names)
            if unknown:
                raise ConsentHistoryError(f"{name} has no field(s) {', '.join(sorted(unknown))}")
    except UnknownAreaError as exc:
        raise ConsentHistoryError(str(exc)) from None


def _segments_between(
    state: _State, start: datetime, stop: datetime | None, named: Sequence[str]
) -> Iterator[tuple[datetime, _Segment]]:
    """Cut [start, stop) at the state's derived instants; evaluate each piece at its start."""
    if stop is not None and stop <= start:
        return  # several events at one instant: only the last state is ever observed
    cuts = {t for t in state.derived_instants() if start < t and (stop is None or t < stop)}
    for at in (start, *sorted(cuts)):
        decisions = {area: _single(state.area_decision(area, at)) for area in named}
        fallback = state.refusal(at) or "not_granted"
        yield at, _Segment(MappingProxyType(decisions), fallback, state.snapshot(at))


def _spans(starts: Sequence[datetime], flags: Sequence[bool]) -> tuple[Interval, ...]:
    """Merge the segments whose flag is set into [start, end) intervals."""
    out: list[Interval] = []
    ends: list[datetime | None] = [*starts[1:], None]
    for start, end, flag in zip(starts, ends, flags, strict=True):
        if not flag:
            continue
        if out and out[-1].end == start:
            out[-1] = Interval(out[-1].start, end)
        else:
            out.append(Interval(start, end))
    return tuple(out)


@dataclass(slots=True)
class _State:
    """A consent after some of its events: the rules live here."""

    grant: Granted
    areas: frozenset[str]
    ever: frozenset[str]
    leaving: dict[str, datetime]  # removed area -> end of its grace window
    end: datetime | None = None  # earliest end any revocation set
    retrospective: bool = False  # a retrospective revocation put the consent in grace
    suspended_at: datetime | None = None
    fields: dict[str, frozenset[str]] = field(default_factory=dict)  # absent: every field
    leaving_fields: dict[str, dict[str, datetime]] = field(default_factory=dict)
    audience: Audience = EVERYONE
    request_version: int | None = None

    @classmethod
    def from_grant(cls, grant: Granted) -> _State:
        state = cls(grant, grant.areas, grant.areas, {})
        state.fields = dict(grant.fields or {})
        state.request_version = grant.request_version
        return state

    def cutoff(self) -> tuple[datetime, Reason] | None:
        """When the whole consent ends as known now, and why."""
        if self.suspended_at is not None:
            limit = self.suspended_at + SUSPENSION_LIMIT
            if self.end is None or limit < self.end:
                return limit, "suspension_expired"
        return None if self.end is None else (self.end, "revoked")

    def derived_instants(self) -> Iterator[datetime]:
        cutoff = self.cutoff()
        if cutoff is not None:
            yield cutoff[0]
        yield from self.leaving.values()
        for until in self.leaving_fields.values():
            yield from until.values()

    def apply(self, event: ConsentEvent, grace: timedelta) -> None:
        cutoff = self.cutoff()
        if cutoff is not None and event.at >= cutoff[0]:
            raise ConsentHistoryError(f"event at {event.at} after the consent ended at {cutoff[0]}")
        if isinstance(event, Granted):
            raise ConsentHistoryError("a consent is granted once; a new grant is a new consent")
        if isinstance(event, AreasChanged):
            self._change_areas(event.areas, event.at + grace)
        elif isinstance(event, FieldsChanged):
            self._change_fields(event.fields, event.at + grace)
            if event.request_version is not None:
                self.request_version = event.request_version
        elif isinstance(event, AudienceChanged):
            self.audience = event.audience
        elif isinstance(event, Revoked):
            self._revoke(event, grace)
        elif isinstance(event, Suspended):
            if self.suspended_at is not None:
                raise ConsentHistoryError(f"suspended at {event.at} while already suspended")
            self.suspended_at = event.at
        else:  # Resumed
            if self.suspended_at is None:
                raise ConsentHistoryError(f"resumed at {event.at} without a suspension")
            self.suspended_at = None

    def _change_areas(self, new: frozenset[str], removed_until: datetime) -> None:
        for area in self.areas - new:
            self.leaving[area] = removed_until
        for area in new:
            self.leaving.pop(area, None)
            # A consent approving field by field shares nothing of a new area until its
            # fields are approved (the service records both at one instant).
            if self.fields and area not in self.fields:
                self.fields[area] = frozenset()
        self.areas = new
        self.ever |= new

    def _change_fields(self, new: Mapping[str, frozenset[str]], removed_until: datetime) -> None:
        for area, chosen in new.items():
            before = self.fields.get(area)
            removed = (frozenset(get_area(area).field_names) if before is None else before) - chosen
            leaving = self.leaving_fields.setdefault(area, {})
            for name in removed:
                leaving[name] = removed_until
            for name in chosen:
                leaving.pop(name, None)
            if not leaving:
                del self.leaving_fields[area]
            self.fields[area] = chosen

    def fields_at(self, area: str, at: datetime) -> frozenset[str] | None:
        """The fields of `area` readable at `at`: approved, or removed and still in grace."""
        chosen = self.fields.get(area)
        if chosen is None:
            return None
        leaving = self.leaving_fields.get(area)
        if leaving:
            chosen = chosen | {name for name, until in leaving.items() if at < until}
        # Every field: None, as before field-level approval (the read path narrows nothing).
        return None if len(chosen) == len(get_area(area).field_names) else chosen

    def _revoke(self, event: Revoked, grace: timedelta) -> None:
        end = revocation_end(event.end_at, event.at, grace)
        if event.end_at <= event.at:
            self.retrospective = True
        self.end = end if self.end is None else min(self.end, end)

    def refusal(self, at: datetime) -> Reason | None:
        """The consent-level reason nothing is allowed at `at`, if there is one."""
        cutoff = self.cutoff()
        if cutoff is not None and at >= cutoff[0]:
            return cutoff[1]
        return "suspended" if self.suspended_at is not None else None

    def area_decision(self, area: str, at: datetime) -> AreaDecision:
        consent_id = self.grant.consent_id
        refusal = self.refusal(at)
        if refusal is not None:
            return _refused(area, refusal, consent_id)
        fields, audience = self.fields_at(area, at), self.audience
        if area in self.areas:
            reason: Reason = "in_grace" if self.retrospective else "granted"
            return AreaDecision(
                area, True, reason, consent_id, self.end, self.retrospective, fields, audience
            )
        leaves_at = self.leaving.get(area)
        if leaves_at is not None and at < leaves_at:
            ends_at = leaves_at if self.end is None else min(leaves_at, self.end)
            return AreaDecision(area, True, "in_grace", consent_id, ends_at, True, fields, audience)
        return _refused(area, "ended" if area in self.ever else "not_granted", consent_id)

    def snapshot(self, at: datetime) -> ConsentSnapshot:
        cutoff = self.cutoff()
        ended = cutoff is not None and at >= cutoff[0]
        return ConsentSnapshot(
            consent_id=self.grant.consent_id,
            status=self._status(ended),
            granted_at=self.grant.at,
            mode=self.grant.mode,
            areas=self.areas,
            ends_at=cutoff[0] if cutoff is not None and ended else self.end,
            ending_areas=MappingProxyType({} if ended else self._ending_areas(at)),
            fields=MappingProxyType(dict(self.fields)),
            ending_fields=MappingProxyType(
                {
                    area: MappingProxyType(ends)
                    for area, until in sorted(self.leaving_fields.items())
                    if (ends := {f: t for f, t in sorted(until.items()) if at < t})
                }
            ),
            audience=self.audience,
            request_version=self.request_version,
        )

    def _status(self, ended: bool) -> Status:
        if ended:
            return "revoked"
        if self.suspended_at is not None:
            return "suspended"
        return "active" if self.end is None else "ending"

    def _ending_areas(self, at: datetime) -> dict[str, datetime]:
        ends = {a: t for a, t in self.leaving.items() if at < t}
        if self.end is not None:
            ends = {a: min(t, self.end) for a, t in ends.items()}
        return {a: ends[a] for a in sorted(ends)}
