"""Dates and times typed into GOV.UK date inputs, read as the Design System says to.

A date input is three boxes (`{name}-day`, `{name}-month`, `{name}-year`). An answer is
either a real date, nothing at all, or an error naming the boxes to highlight, in the
Design System's words ("From date must include a month", "... must be a real date").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time

PARTS = ("day", "month", "year")
_TIME = re.compile(r"(\d{1,2})[:.](\d{2})")


@dataclass(frozen=True, slots=True)
class DateAnswer:
    """What was typed into one date input, and the date it means (None: empty or wrong)."""

    name: str
    typed: dict[str, str]
    value: date | None = None
    error: str | None = None
    wrong: tuple[str, ...] = field(default=())  # the boxes to highlight

    @property
    def empty(self) -> bool:
        return not any(self.typed.values())

    @property
    def href(self) -> str:
        """The box the error summary links to: the first one in error."""
        return f"#{self.name}-{self.wrong[0] if self.wrong else 'day'}"

    def items(self) -> list[dict[str, str]]:
        """`govukDateInput` items: typed values kept, wrong boxes marked."""
        widths = {"day": 2, "month": 2, "year": 4}
        return [
            {
                "name": part,
                "value": self.typed[part],
                "classes": f"govuk-input--width-{widths[part]}"
                + (" govuk-input--error" if part in self.wrong else ""),
            }
            for part in PARTS
        ]


def read_date(query: Mapping[str, str], name: str, label: str) -> DateAnswer:
    """The date typed into `name`'s boxes; `label` ("From date") starts its error messages."""
    typed = {part: query.get(f"{name}-{part}", "").strip()[:10] for part in PARTS}
    missing = tuple(part for part in PARTS if not typed[part])
    if len(missing) == len(PARTS):
        return DateAnswer(name, typed)
    if missing:
        words = " and ".join(missing) if len(missing) == 2 else missing[0]
        return DateAnswer(name, typed, error=f"{label} must include a {words}", wrong=missing)
    if not all(typed[part].isdigit() for part in PARTS):
        wrong = tuple(part for part in PARTS if not typed[part].isdigit())
        return DateAnswer(name, typed, error=f"{label} must be a real date", wrong=wrong)
    if len(typed["year"]) != 4:
        return DateAnswer(name, typed, error="Year must include 4 numbers", wrong=("year",))
    try:
        value = date(int(typed["year"]), int(typed["month"]), int(typed["day"]))
    except ValueError:
        return DateAnswer(name, typed, error=f"{label} must be a real date", wrong=PARTS)
    return DateAnswer(name, typed, value)


def read_time(text: str) -> time | None:
    """`14:00` or `9.30` (24-hour clock) as a time; None if it is not a real one."""
    found = _TIME.fullmatch(text.strip())
    if found is None:
        return None
    hour, minute = int(found[1]), int(found[2])
    return time(hour, minute) if hour < 24 and minute < 60 else None
