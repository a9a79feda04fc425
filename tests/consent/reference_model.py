"""A deliberately naive model of the consent rules, to check the engine against.

Every answer replays, one by one, the events that had happened by the instant asked about
and then judges that instant alone.  Nothing is precomputed or cached and nothing is shared
with `consent.engine`: only the event classes and the rules as DESIGN.md states them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from consent.areas import CATALOGUE
from consent.events import AreasChanged, ConsentEvent, Granted, Resumed, Revoked, Suspended

SUSPENSION_LIMIT = timedelta(days=30)
MAX_GRACE = timedelta(hours=72)


@dataclass(frozen=True)
class Expected:
    allowed: bool
    reason: str
    in_grace: bool = False
    ends_at: datetime | None = None


@dataclass
class Facts:
    """What the history says once the events up to some instant have been replayed."""

    mode: str = "read"
    areas: set[str] = field(default_factory=set)
    ever_granted: set[str] = field(default_factory=set)
    removed_until: dict[str, datetime] = field(default_factory=dict)
    revoked_until: datetime | None = None  # earliest end set by any revocation
    revoked_retrospectively: bool = False
    suspended_since: datetime | None = None

    def end(self) -> tuple[datetime, str] | None:
        """When the consent ends (as known), and the reason given once it has."""
        candidates = []
        if self.revoked_until is not None:
            candidates.append((self.revoked_until, 0, "revoked"))
        if self.suspended_since is not None:
            candidates.append((self.suspended_since + SUSPENSION_LIMIT, 1, "suspension_expired"))
        if not candidates:
            return None
        when, _, why = min(candidates)  # a revocation wins a tie
        return when, why


def replay(events: Sequence[ConsentEvent], until: datetime, grace: timedelta) -> Facts:
    facts = Facts()
    for event in events:
        if event.at > until:
            break
        if isinstance(event, Granted):
            facts.mode = event.mode
            facts.areas = set(event.areas)
            facts.ever_granted = set(event.areas)
        elif isinstance(event, AreasChanged):
            for area in facts.areas:
                if area not in event.areas:
                    facts.removed_until[area] = event.at + grace
            for area in event.areas:
                facts.removed_until.pop(area, None)
            facts.areas = set(event.areas)
            facts.ever_granted |= event.areas
        elif isinstance(event, Revoked):
            if event.end_at > event.at:
                ends = event.end_at
            else:
                ends = event.at + grace
                facts.revoked_retrospectively = True
            if facts.revoked_until is None or ends < facts.revoked_until:
                facts.revoked_until = ends
        elif isinstance(event, Suspended):
            facts.suspended_since = event.at
        elif isinstance(event, Resumed):
            facts.suspended_since = None
    return facts


def expected_decision(
    events: Sequence[ConsentEvent], grace: timedelta, area: str, t: datetime, operation: str
) -> Expected:
    """May the partner do `operation` on `area` at instant `t`?"""
    verdict = _expected_read(events, grace, area, t)
    if operation == "write" and verdict.allowed and replay(events, t, grace).mode == "read":
        return Expected(False, "write_not_permitted")
    return verdict


def _expected_read(
    events: Sequence[ConsentEvent], grace: timedelta, area: str, t: datetime
) -> Expected:
    if t < events[0].at:
        return Expected(False, "not_yet_granted")
    facts = replay(events, t, grace)
    end = facts.end()
    if end is not None and t >= end[0]:
        return Expected(False, end[1])
    if facts.suspended_since is not None:
        return Expected(False, "suspended")
    if area in facts.areas:
        if facts.revoked_retrospectively:
            return Expected(True, "in_grace", True, facts.revoked_until)
        return Expected(True, "granted", False, facts.revoked_until)
    if area in facts.removed_until and t < facts.removed_until[area]:
        ends = facts.removed_until[area]
        if facts.revoked_until is not None and facts.revoked_until < ends:
            ends = facts.revoked_until
        return Expected(True, "in_grace", True, ends)
    if area in facts.ever_granted:
        return Expected(False, "ended")
    return Expected(False, "not_granted")


def expected_status(events: Sequence[ConsentEvent], grace: timedelta, t: datetime) -> str:
    facts = replay(events, t, grace)
    end = facts.end()
    if end is not None and t >= end[0]:
        return "revoked"
    if facts.suspended_since is not None:
        return "suspended"
    return "active" if facts.revoked_until is None else "ending"


def history_problem(events: Sequence[ConsentEvent], grace: timedelta) -> str | None:
    """Why this history is malformed, or None if it is fine."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        return "grace out of range"
    if not events or not isinstance(events[0], Granted):
        return "does not start with a grant"
    for index, event in enumerate(events):
        problem = _event_problem(events, index, event, grace)
        if problem is not None:
            return problem
    return None


def _event_problem(
    events: Sequence[ConsentEvent], index: int, event: ConsentEvent, grace: timedelta
) -> str | None:
    if event.consent_id != events[0].consent_id:
        return "another consent's event"
    if index and event.at < events[index - 1].at:
        return "out of time order"
    if isinstance(event, Granted | AreasChanged) and not _known_areas(event.areas):
        return "bad areas"
    if isinstance(event, Granted) and event.mode not in ("read", "read_write"):
        return "bad mode"
    if index == 0:
        return None
    before = replay(events[:index], event.at, grace)
    end = before.end()
    if end is not None and event.at >= end[0]:
        return "after the end"
    if isinstance(event, Granted):
        return "second grant"
    if isinstance(event, Suspended) and before.suspended_since is not None:
        return "suspended twice"
    if isinstance(event, Resumed) and before.suspended_since is None:
        return "resume without suspension"
    return None


def _known_areas(areas: frozenset[str]) -> bool:
    return bool(areas) and all(area in CATALOGUE for area in areas)
