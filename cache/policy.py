"""What to cache and what to refresh (pure).

Core areas are always cached: the agent extracts them on its own schedule and the broker
accepts them.  Any other area is cached only once some partner holds a consent for it and
some partner has asked for it.  The broker asks the agent to refresh an area only while a
consented partner uses it: an area nobody has asked for in `unused_area_days` is no longer
refreshed, so it goes stale and is eventually purged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Final

from cache.freshness import is_stale
from cache.repository import AreaState
from consent.areas import get_area

# One extraction request per area per hour at most: the agent may be offline for a while.
REFRESH_RETRY: Final = timedelta(hours=1)


def should_cache(
    area: str, consented_areas: Collection[str], requested_areas_recently: Collection[str]
) -> bool:
    if get_area(area).core:
        return True
    return area in consented_areas and area in requested_areas_recently


def in_use(state: AreaState, now: datetime, unused_area_days: float) -> bool:
    """Some partner asked for the area within the last `unused_area_days`."""
    asked = state.last_requested_at
    return asked is not None and now - asked <= timedelta(days=unused_area_days)


def needs_refresh(
    state: AreaState, consented: Collection[str], now: datetime, unused_area_days: float
) -> bool:
    """Stale (or asked for and never cached), used by a consented partner, not just asked."""
    if state.as_of is not None and not is_stale(state.area, state.as_of, now):
        return False
    asked = state.refresh_requested_at
    if asked is not None and now - asked < REFRESH_RETRY:
        return False
    return state.area in consented and in_use(state, now, unused_area_days)


def areas_to_refresh(
    states: Iterable[AreaState],
    consented: Callable[[str], Collection[str]],
    now: datetime,
    unused_area_days: float,
) -> dict[str, list[str]]:
    """School id -> areas to ask its agent for; `consented(school)` is the areas any
    partner may read now at that school."""
    chosen: dict[str, list[str]] = {}
    allowed: dict[str, Collection[str]] = {}
    for state in states:
        if state.school_id not in allowed:
            allowed[state.school_id] = consented(state.school_id)
        if needs_refresh(state, allowed[state.school_id], now, unused_area_days):
            chosen.setdefault(state.school_id, []).append(state.area)
    return {school: sorted(areas) for school, areas in sorted(chosen.items())}
