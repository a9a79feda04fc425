"""A plausible English school calendar: terms, half terms and bank holidays.

Real term dates vary by local authority; these follow the usual pattern closely enough
that attendance counts and registers look like a real school's.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import date, timedelta
from functools import lru_cache

ONE_DAY = timedelta(days=1)


def academic_year(day: date) -> int:
    """The calendar year in which `day`'s academic year began (1 September)."""
    return day.year if day.month >= 9 else day.year - 1


def easter_sunday(year: int) -> date:
    """Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _week_of(day: date) -> tuple[date, date]:
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=4)


def _last_monday(year: int, month: int) -> date:
    first_next = date(year + (month == 12), month % 12 + 1, 1)
    last = first_next - ONE_DAY
    return last - timedelta(days=last.weekday())


def _closures(year: int) -> list[tuple[date, date]]:
    spring = year + 1
    easter = easter_sunday(spring)
    first_may = date(spring, 5, 1)
    may_day = first_may + timedelta(days=-first_may.weekday() % 7)
    return [
        (date(year, 9, 1), date(year, 9, 2)),  # training days before term
        _week_of(_last_monday(year, 10)),
        (date(year, 12, 20), date(spring, 1, 2)),
        _week_of(date(spring, 2, 17)),
        (easter - timedelta(days=6), easter + timedelta(days=5)),
        (may_day, may_day),
        _week_of(_last_monday(spring, 5)),
        (date(spring, 7, 22), date(spring, 8, 31)),
    ]


@lru_cache(maxsize=8)
def school_days(year: int) -> tuple[date, ...]:
    """Every school day of academic year `year`, in order."""
    closed = _closures(year)
    out: list[date] = []
    day = date(year, 9, 1)
    while day <= date(year + 1, 8, 31):
        if day.weekday() < 5 and not any(a <= day <= b for a, b in closed):
            out.append(day)
        day += ONE_DAY
    return tuple(out)


def is_school_day(day: date) -> bool:
    days = school_days(academic_year(day))
    i = bisect_left(days, day)
    return i < len(days) and days[i] == day


def school_days_until(day: date) -> tuple[date, ...]:
    """School days of `day`'s academic year up to and including `day`."""
    days = school_days(academic_year(day))
    return days[: bisect_right(days, day)]


def count_between(days: tuple[date, ...], first: date, before: date) -> int:
    """How many of the sorted `days` fall in [first, before)."""
    return max(0, bisect_left(days, before) - bisect_left(days, first))
