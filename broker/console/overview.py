"""What the console's home page puts first: what needs the school's attention.

Pure functions over what the admin API already computes (partner overviews, agent health),
so the page and the API can never disagree about a partner's status or an agent's silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.admin.consents import PartnerOverview

ENDING_SOON = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class Attention:
    awaiting: list[PartnerOverview]  # partners that asked and were never answered
    ending: list[PartnerOverview]  # consents (or some of their areas) that end soon
    suspended: list[PartnerOverview]
    silent_agents: list[dict[str, Any]]
    failing_agents: list[dict[str, Any]]
    stale_areas: list[dict[str, Any]]
    held_deletions: list[dict[str, Any]]

    @property
    def empty(self) -> bool:
        return not (
            self.awaiting
            or self.ending
            or self.suspended
            or self.silent_agents
            or self.failing_agents
            or self.stale_areas
            or self.held_deletions
        )


def partner_status(item: PartnerOverview) -> str:
    """`awaiting decision`, or the consent's status (`active`, `ending`, `suspended`, ...)."""
    return "awaiting decision" if item.consent is None else item.consent.status


def attention(
    partners: Sequence[PartnerOverview], health: dict[str, Any], now: datetime
) -> Attention:
    ending = [
        p
        for p in partners
        if p.consent is not None
        and p.consent.status in ("active", "ending", "suspended")
        and _soonest_end(p) is not None
        and _soonest_end(p) - now <= ENDING_SOON  # type: ignore[operator]
    ]
    live_agents = [a for a in health.get("agents", []) if not a.get("revoked")]
    return Attention(
        awaiting=[p for p in partners if p.consent is None],
        ending=sorted(ending, key=lambda p: _soonest_end(p) or now),
        suspended=[p for p in partners if p.consent and p.consent.status == "suspended"],
        silent_agents=[a for a in live_agents if a.get("silent")],
        failing_agents=[a for a in live_agents if a.get("errors")],
        stale_areas=[a for a in health.get("areas", []) if a.get("stale")],
        held_deletions=[h for h in health.get("held_deletions", []) if not h.get("confirmed_at")],
    )


def _soonest_end(item: PartnerOverview) -> datetime | None:
    if item.consent is None:
        return None
    snapshot = item.consent.snapshot
    ends = [t for t in (snapshot.ends_at, *snapshot.ending_areas.values()) if t is not None]
    return min(ends) if ends else None


def soonest_end(item: PartnerOverview) -> datetime | None:
    return _soonest_end(item)
