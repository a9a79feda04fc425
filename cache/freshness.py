"""Freshness and expiry of cached areas (pure).

An area is valid for its catalogue validity after `as_of` (24 h; 7 days for photos), then
stale: still served, marked stale.  Thirty days after it went out of date it is purged.
Boundaries: stale from the instant validity ends; purged only when *more* than 30 days
out of date, so at exactly validity + 30 days it is still kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from consent.areas import get_area

OUT_OF_DATE_RETENTION: Final = timedelta(days=30)


def validity(area: str) -> timedelta:
    return get_area(area).validity


def expires_at(area: str, as_of: datetime) -> datetime:
    """When the area stops being fresh."""
    return as_of + validity(area)


def is_stale(area: str, as_of: datetime, now: datetime) -> bool:
    return now >= expires_at(area, as_of)


def purge_after(area: str, as_of: datetime) -> datetime:
    """The last instant the area may be kept: validity + 30 days after `as_of`."""
    return expires_at(area, as_of) + OUT_OF_DATE_RETENTION


def is_expired(area: str, as_of: datetime, now: datetime) -> bool:
    return now > purge_after(area, as_of)


def rfc3339(at: datetime) -> str:
    """An instant as RFC 3339 UTC with a Z, as the partner API promises."""
    return at.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"
