"""When each area is due, and whether its upload is full.  Pure: `now` is an argument.

- Core areas: once a night inside the window (default 01:00-06:00 school time).  Each
  school starts at its own offset into the window, derived from its agent key, so 25,000
  agents do not all hit the broker at 01:00; the last 40% of the window is left for the
  run itself and its retries.
- Attendance (marks and summary) and behaviour: every N minutes inside their hours, on
  weekdays unless configured otherwise.
- Any scheduled area never extracted is due at once: a new agent uploads straight away.
- A failed extraction is tried again after `RETRY_FAILED_AFTER`, not on every tick.
- An area marked as needing a full upload (the broker refused or superseded a batch, so
  its copy may differ from our hashes) is resynced after `RESYNC_AFTER`, not left stale
  until the next night; the wait keeps a batch the broker keeps refusing from looping.
- Full upload: the first time, when the area was marked as needing one (the broker's copy
  may differ from our hashes), on the weekly day's first run, and if a week was missed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Final

from agents.config import NightlySchedule, PeriodicSchedule, Schedules
from agents.state import AreaStatus

RETRY_FAILED_AFTER: Final = timedelta(minutes=15)
RESYNC_AFTER: Final = timedelta(minutes=15)
FULL_AT_LEAST_EVERY: Final = timedelta(days=8)
NIGHT_SHARE_FOR_OFFSET: Final = 0.6


@dataclass(frozen=True, slots=True)
class Due:
    area: str
    full: bool
    reason: str  # first | resync | nightly | attendance | behaviour


def nightly_offset(schedule: NightlySchedule, jitter_seed: int) -> timedelta:
    """This school's start, as an offset into the nightly window."""
    minutes = _window_minutes(schedule.start, schedule.end)
    spread = max(1, int(minutes * NIGHT_SHARE_FOR_OFFSET))
    return timedelta(minutes=jitter_seed % spread)


def nightly_window(
    now: datetime, schedule: NightlySchedule, jitter_seed: int, tz: tzinfo
) -> tuple[datetime, datetime] | None:
    """The (jittered start, end) of the night window `now` is in, or None outside it."""
    local = now.astimezone(tz)
    length = timedelta(minutes=_window_minutes(schedule.start, schedule.end))
    offset = nightly_offset(schedule, jitter_seed)
    for day in (local.date(), local.date() - timedelta(days=1)):
        opens = _at(day, schedule.start, tz)
        if opens + offset <= local < opens + length:
            return opens + offset, opens + length
    return None


def due(
    now: datetime,
    schedules: Schedules,
    statuses: Mapping[str, AreaStatus],
    *,
    available: frozenset[str],
    jitter_seed: int,
    tz: tzinfo,
) -> list[Due]:
    """Every area to extract now, in a stable order (nightly, attendance, behaviour)."""
    out: dict[str, Due] = {}
    window = nightly_window(now, schedules.nightly, jitter_seed, tz)
    plans = (
        ("nightly", schedules.nightly.areas, lambda s: _nightly_due(s, window)),
        ("attendance", schedules.attendance.areas, _periodic(now, schedules.attendance, tz)),
        ("behaviour", schedules.behaviour.areas, _periodic(now, schedules.behaviour, tz)),
    )
    for reason, areas, is_due in plans:
        for area in areas:
            if area not in available or area in out:
                continue
            status = statuses.get(area, AreaStatus(area))
            if _recently_failed(now, status):
                continue
            if status.last_extracted_at is None:
                out[area] = Due(area, True, "first")
            elif _resync_due(now, status):
                out[area] = Due(area, True, "resync")
            elif is_due(status):
                full = wants_full(now, status, schedules.weekly_full_day, tz)
                out[area] = Due(area, full, reason)
    return list(out.values())


def wants_full(now: datetime, status: AreaStatus, weekly_day: int, tz: tzinfo) -> bool:
    last = status.last_full_at
    if last is None or status.needs_full or now - last >= FULL_AT_LEAST_EVERY:
        return True
    local = now.astimezone(tz)
    return local.weekday() == weekly_day and last.astimezone(tz).date() < local.date()


def _nightly_due(status: AreaStatus, window: tuple[datetime, datetime] | None) -> bool:
    if window is None:
        return False
    last = status.last_extracted_at
    return last is None or last < window[0]


def _periodic(now: datetime, schedule: PeriodicSchedule, tz: tzinfo) -> _PeriodicCheck:
    return _PeriodicCheck(now, schedule, tz)


@dataclass(frozen=True, slots=True)
class _PeriodicCheck:
    now: datetime
    schedule: PeriodicSchedule
    tz: tzinfo

    def __call__(self, status: AreaStatus) -> bool:
        schedule, local = self.schedule, self.now.astimezone(self.tz)
        if schedule.every_minutes == 0:
            return False
        if schedule.weekdays_only and local.weekday() >= 5:
            return False
        if not schedule.start <= local.time().replace(tzinfo=None) < schedule.end:
            return False
        last = status.last_extracted_at
        return last is None or self.now - last >= timedelta(minutes=schedule.every_minutes)


def _resync_due(now: datetime, status: AreaStatus) -> bool:
    last = status.last_extracted_at
    return status.needs_full and (last is None or now - last >= RESYNC_AFTER)


def _recently_failed(now: datetime, status: AreaStatus) -> bool:
    attempted = status.last_attempt_at
    return (
        status.last_ok is False and attempted is not None and now - attempted < RETRY_FAILED_AFTER
    )


def _window_minutes(start: time, end: time) -> int:
    minutes = (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
    return minutes if minutes > 0 else minutes + 24 * 60


def _at(day: date, moment: time, tz: tzinfo) -> datetime:
    return datetime.combine(day, moment, tzinfo=tz)
