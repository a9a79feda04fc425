"""The mass-deletion guard: whether an upload deletes so much of an area that a person must agree.

Pure, and shared by the agent (which holds such an upload back) and the broker (which
refuses to apply one), so the two always draw the line in the same place.  A wrong export
(a header-only file, another shape of bundle) reads as "everyone left": the guard is what
stops that from deleting a school's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

DEFAULT_MAX_SHARE: Final = 0.10
DEFAULT_MAX_COUNT: Final = 5
# Dated events exported for a moving window: the oldest days leave every day by design
# (a 5-day register window loses 20% nightly), so only emptying the area is held.
WINDOWED_AREAS: Final = frozenset({"attendance.marks", "behaviour"})


@dataclass(frozen=True, slots=True)
class DeletionLimit:
    """Held when more than `max_share` of the area AND more than `max_count` records go."""

    max_share: float = DEFAULT_MAX_SHARE
    max_count: int = DEFAULT_MAX_COUNT

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_LIMIT

    def as_json(self) -> dict[str, Any]:
        return {"max_share": self.max_share, "max_count": self.max_count}


@dataclass(frozen=True, slots=True)
class HeldDeletion:
    area: str
    records: int  # held now, before the upload
    deleting: int

    def describe(self) -> str:
        return (
            f"{self.area}: mass deletion held: the upload would delete {self.deleting} of"
            f" {self.records} records; an admin or operator must confirm it"
        )


DEFAULT_LIMIT: Final = DeletionLimit()


def holds(limit: DeletionLimit, records: int, deleting: int, area: str = "") -> bool:
    """True when deleting `deleting` of `records` of `area` must wait for a confirmation.

    Emptying an area that holds records is held at any threshold below 100%: no real
    school loses every pupil, member of staff or group between two exports.
    """
    if deleting <= 0 or records <= 0:
        return False
    if deleting >= records and limit.max_share < 1:
        return True
    if area in WINDOWED_AREAS:
        return False
    return deleting > limit.max_count and deleting > limit.max_share * records


def parse_limit(value: Any) -> DeletionLimit | None:
    """A `deletion_limit` envelope member, or None when it is not a valid one."""
    if not isinstance(value, dict) or set(value) != {"max_share", "max_count"}:
        return None
    share, count = value["max_share"], value["max_count"]
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return None
    return DeletionLimit(float(share), count)
