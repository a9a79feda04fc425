"""What happens on school days: register marks, year-to-date tallies, behaviour events.

Only the last few days of marks are kept as records (registers are large), but every mark
ever generated is counted into the pupil's tally, so the attendance summary always agrees
with the marks a partner can see.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from datetime import date

from agents.mis._synthetic.calendar import count_between, school_days_until
from agents.mis._synthetic.model import BehaviourEvent, Mark, Pupil, Tally, World
from agents.mis._synthetic.rand import chance, pick, poisson
from agents.mis._synthetic.structure import pastoral_group_id
from agents.mis._synthetic.tables import BEHAVIOUR_TYPES
from agents.mis.attendance_codes import CODES_BY_MARK

_AUTHORISED = (("I", 0.75), ("M", 0.1), ("C", 0.05), ("R", 0.04), ("E", 0.03), ("T", 0.03))
_UNAUTHORISED = (("O", 0.45), ("G", 0.3), ("N", 0.25))
_ACTIVITIES = (("V", 0.5), ("P", 0.3), ("B", 0.2))
_AEA_DAY_RATE = 0.004
_MISSING_RATE = 0.001


def count_mark(tally: Tally, mark: str) -> None:
    meaning = CODES_BY_MARK[mark].meaning
    if meaning == "not_required":
        return
    tally.possible += 1
    if meaning == "present":
        tally.present += 1
    elif meaning == "aea":
        tally.aea += 1
    elif meaning == "authorised_absence":
        tally.authorised += 1
    elif meaning == "unauthorised_absence":
        tally.unauthorised += 1
    else:
        tally.missing += 1
    if mark in ("L", "U"):
        tally.late += 1


def register_day(rng: random.Random, world: World, day: date) -> None:
    """Take both registers of `day` for every pupil on roll that day."""
    marks: list[Mark] = []
    for pupil in world.pupils.values():
        if pupil.entry <= day and (pupil.leaving is None or day <= pupil.leaving):
            for mark in _pupil_day(rng, pupil, day):
                count_mark(pupil.tally, mark.mark)
                marks.append(mark)
    world.marks[day] = marks


def _pupil_day(rng: random.Random, pupil: Pupil, day: date) -> tuple[Mark, Mark]:
    if chance(rng, pupil.attendance_rate):
        if chance(rng, _AEA_DAY_RATE):
            code = pick(rng, _ACTIVITIES)
            return _mark(pupil, day, "AM", code), _mark(pupil, day, "PM", code)
        am = _arrival(rng, pupil, day)
        pm = "-" if chance(rng, _MISSING_RATE) else "\\"
        return am, _mark(pupil, day, "PM", pm)
    unauthorised = chance(rng, pupil.unauthorised_share)
    code = pick(rng, _UNAUTHORISED if unauthorised else _AUTHORISED)
    if code == "M":  # appointments take a morning, not a day
        return _mark(pupil, day, "AM", "M"), _mark(pupil, day, "PM", "\\")
    return _mark(pupil, day, "AM", code), _mark(pupil, day, "PM", code)


def _arrival(rng: random.Random, pupil: Pupil, day: date) -> Mark:
    if not chance(rng, pupil.late_rate):
        return _mark(pupil, day, "AM", "/")
    if chance(rng, 0.85):
        return _mark(pupil, day, "AM", "L", rng.randint(3, 25))
    return _mark(pupil, day, "AM", "U", rng.randint(31, 70))


def _mark(pupil: Pupil, day: date, session: str, mark: str, late: int | None = None) -> Mark:
    return Mark(pupil.num, day, session, mark, late)


def seed_tallies(rng: random.Random, world: World, window_start: date) -> None:
    """Year-to-date counts before the visible window, drawn in bulk rather than per day."""
    days = school_days_until(world.day)
    for pupil in world.pupils.values():
        first = max(pupil.entry, days[0]) if days else window_start
        until = min(window_start, _day_after(pupil.leaving) or window_start)
        n = count_between(days, first, until)
        if n:
            _bulk_tally(rng, pupil, n)


def _day_after(day: date | None) -> date | None:
    return None if day is None else date.fromordinal(day.toordinal() + 1)


def _bulk_tally(rng: random.Random, pupil: Pupil, days: int) -> None:
    rate = pupil.attendance_rate
    spread = math.sqrt(days * rate * (1 - rate))
    absent = min(days, max(0, round(days * (1 - rate) + rng.gauss(0.0, spread))))
    present_days = days - absent
    aea = round(present_days * 2 * _AEA_DAY_RATE)
    unauthorised = round(absent * 2 * pupil.unauthorised_share)
    tally = pupil.tally
    tally.possible += days * 2
    tally.present += present_days * 2 - aea
    tally.aea += aea
    tally.unauthorised += unauthorised
    tally.authorised += absent * 2 - unauthorised
    tally.late += round(present_days * pupil.late_rate)


# --- behaviour -------------------------------------------------------------------------


class Roster:
    """Pupils in order of entry with cumulative sanction weights, for quick weighted picks.

    Those on roll by a day are a prefix of the list, so one roster serves a whole year.
    """

    def __init__(self, pupils: list[Pupil]) -> None:
        self.pupils = sorted(pupils, key=lambda p: (p.entry, p.num))
        self.entries = [p.entry for p in self.pupils]
        self.cumulative = list(itertools.accumulate(p.conduct for p in self.pupils))

    def on_roll_by(self, day: date) -> int:
        return bisect_right(self.entries, day)

    def pick(self, rng: random.Random, count: int, weighted: bool) -> Pupil:
        if not weighted:
            return self.pupils[rng.randrange(count)]
        i = bisect_right(self.cumulative, rng.random() * self.cumulative[count - 1])
        return self.pupils[min(i, count - 1)]


def behaviour_day(rng: random.Random, world: World, day: date, roster: Roster) -> None:
    """Log the day's behaviour and achievement events; a few pupils get most sanctions."""
    count = roster.on_roll_by(day)
    if not count:
        return
    kinds = BEHAVIOUR_TYPES[world.phase]
    weights = [k.weight for k in kinds]
    for _ in range(poisson(rng, count * 0.05)):
        kind = rng.choices(kinds, weights=weights)[0]
        pupil = roster.pick(rng, count, weighted=kind.points < 0)
        recorder, subject = _lesson_context(rng, world, pupil)
        verb = "in" if kind.points < 0 else "for excellent work in"
        world.behaviour.append(
            BehaviourEvent(
                id=f"beh-{world.next_behaviour:07d}",
                pupil=pupil.num,
                kind=kind.name,
                day=day,
                description=f"{kind.name} {verb} {subject}",
                outcome=rng.choice(kind.outcomes),
                recorded_by=recorder,
                points=kind.points,
            )
        )
        world.next_behaviour += 1


def _lesson_context(rng: random.Random, world: World, pupil: Pupil) -> tuple[str | None, str]:
    """A teacher who teaches the pupil, and the subject they teach them."""
    if pupil.groups:
        group = world.groups.get(rng.choice(pupil.groups))
        if group is not None and group.staff:
            return group.staff[0], group.subject or "lessons"
    form = world.groups.get(pastoral_group_id("reg", pupil.form))
    staff = form.staff[0] if form and form.staff else None
    return staff, "class"
