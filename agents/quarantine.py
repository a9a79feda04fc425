"""Quarantine per record: when an area has so many invalid records that it is held whole.

Pure.  One bad record is left out and reported while the rest of its area goes up; but an
export where a large share of an area is invalid is a wrong export (another format, a
broken column), and sending the rest would present a thinned area as the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_INVALID_SHARE: Final = 0.10
DEFAULT_MAX_INVALID_COUNT: Final = 5
# Shown in telemetry: enough to find the rows, small enough for a heartbeat.
MAX_REPORTED: Final = 100


@dataclass(frozen=True, slots=True)
class InvalidLimit:
    """Held when more than `max_share` of the area AND more than `max_count` are invalid."""

    max_share: float = DEFAULT_MAX_INVALID_SHARE
    max_count: int = DEFAULT_MAX_INVALID_COUNT


DEFAULT_INVALID_LIMIT: Final = InvalidLimit()


def holds_area(limit: InvalidLimit, valid: int, invalid: int) -> bool:
    """True when `invalid` of `valid + invalid` records is too many to send the rest."""
    total = valid + invalid
    return invalid > limit.max_count and invalid > limit.max_share * total


def describe_hold(area: str, valid: int, invalid: int, limit: InvalidLimit) -> str:
    return (
        f"{area}: held whole: {invalid} of {valid + invalid} records are invalid (more than"
        f" {limit.max_share:.0%} and more than {limit.max_count}); nothing was sent, the"
        " broker keeps what it had"
    )
