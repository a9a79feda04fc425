"""Dates as exports write them, read into ISO `YYYY-MM-DD`, or refused with the kind of problem.

Pure.  Accepted: ISO dates, ISO date-times (the date part is kept: an export's midnight
`2009-11-01T00:00:00Z` is a date of birth, not an instant) and UK day-first dates
(`17/04/2010`, `7/4/2010`).  `4/17/2010` is refused, never read month-first: a school in
England writes day-first, so a date that only works month-first is a US-format export,
and every other date of that export is then in doubt.

`date_format` (per adapter, `[mis] date_format`):
- `iso`: ISO dates and date-times only;
- `uk`: ISO, and slashed dates read day-first;
- `auto` (the default): as `uk`, but when a column holds a date that is only valid
  month-first, that column's slashed dates with day and month both 12 or less are
  ambiguous and refused too.
Errors never carry the value (it may be a date of birth).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Final

DATE_FORMATS: Final = ("iso", "uk", "auto")
DEFAULT_DATE_FORMAT: Final = "auto"
_ISO: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|z|[+-]\d{2}:?\d{2})?)?$"
)
_SLASHED: Final = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


class DateProblem(ValueError):
    """Why a date was refused (the kind of problem, not the value)."""


def month_first_seen(values: Iterable[str]) -> bool:
    """True when some slashed date is impossible day-first but valid month-first."""
    for text in values:
        match = _SLASHED.match(text.strip())
        if match is None:
            continue
        first, second, year = int(match[1]), int(match[2]), int(match[3])
        if _valid(year, second, first) is None and _valid(year, first, second) is not None:
            return True
    return False


def read_date(text: str, date_format: str = DEFAULT_DATE_FORMAT, *, us_column: bool = False) -> str:
    """`text` as `YYYY-MM-DD`; `us_column` is `month_first_seen` of its column (auto only)."""
    value = text.strip()
    iso = _ISO.match(value)
    if iso:
        parsed = _valid(int(iso[1]), int(iso[2]), int(iso[3]))
        if parsed is None:
            raise DateProblem("not a real date")
        return parsed
    slashed = _SLASHED.match(value)
    if slashed is None:
        expected = "YYYY-MM-DD" if date_format == "iso" else "YYYY-MM-DD or DD/MM/YYYY"
        raise DateProblem(f"not a date ({expected} expected)")
    if date_format == "iso":
        raise DateProblem("a slashed date where date_format is iso (YYYY-MM-DD expected)")
    day, month, year = int(slashed[1]), int(slashed[2]), int(slashed[3])
    parsed = _valid(year, month, day)
    if parsed is None:
        if _valid(year, day, month) is not None:
            raise DateProblem("only valid month-first (US order); UK dates are day-first")
        raise DateProblem("not a real date")
    if date_format == "auto" and us_column and day <= 12 and month <= 12 and day != month:
        raise DateProblem("ambiguous: this column also holds month-first (US) dates")
    return parsed


def _valid(year: int, month: int, day: int) -> str | None:
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None
