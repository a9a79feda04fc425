"""One day in the life of the school: what changes between two extractions.

Each school day has at least one joiner, one leaver and one contact change, so a delta
between consecutive extractions always exercises upserts and deletions.  Each day's
randomness is seeded by the date, so advancing two days at once or one at a time ends in
the same state.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from agents.mis._synthetic.activity import Roster, behaviour_day, register_day
from agents.mis._synthetic.calendar import academic_year, is_school_day
from agents.mis._synthetic.model import Family, Pupil, World
from agents.mis._synthetic.people import (
    add_family_contacts,
    landline,
    mobile_number,
    new_address,
    new_family,
    new_pupil,
    personal_email,
    set_sen,
)
from agents.mis._synthetic.rand import chance, pick, poisson, stream
from agents.mis._synthetic.structure import join_pastoral, join_teaching
from agents.mis.base import AdapterError

_CONTACT_CHANGES = (("move", 0.25), ("mobile", 0.35), ("email", 0.15), ("priority", 0.25))


def advance_day(world: World) -> None:
    day = world.day + timedelta(days=1)
    if academic_year(day) != world.year_start:
        raise AdapterError(
            "the synthetic school does not roll over into a new academic year; "
            "build a new SyntheticMis for it"
        )
    rng = stream(world.seed, f"day/{day.isoformat()}")
    world.day = day
    if is_school_day(day):
        turnover = len(world.on_roll()) / 4000
        for _ in range(1 + poisson(rng, turnover)):
            _join(rng, world, day)
        register_day(rng, world, day)
        for _ in range(1 + poisson(rng, turnover)):
            _leave(rng, world, day)
        behaviour_day(rng, world, day, Roster(world.on_roll()))
        _trim_marks(world)
        _pupil_changes(rng, world)
    # The first change of the day cycles through the kinds so every kind shows up within
    # four days; any further changes are drawn at random.
    kinds = [k for k, _ in _CONTACT_CHANGES]
    _contact_change(rng, world, kinds[day.toordinal() % len(kinds)])
    for _ in range(poisson(rng, len(world.families) / 1000)):
        _contact_change(rng, world, pick(rng, _CONTACT_CHANGES))


def _join(rng: random.Random, world: World, day: date) -> None:
    on_roll = world.on_roll()
    counts = {y: 1 for y in world.years}
    for pupil in on_roll:
        counts[pupil.year] += 1
    year = rng.choices(world.years, weights=[counts[y] for y in world.years])[0]
    per_form = {f: 0 for f in world.forms[year]}
    for pupil in on_roll:
        if pupil.year == year:
            per_form[pupil.form] += 1
    form = min(world.forms[year], key=lambda f: per_form[f])
    sibling = rng.choice(on_roll) if on_roll and chance(rng, 0.2) else None
    family = sibling.family if sibling else new_family(rng, world)
    pupil = new_pupil(rng, world, family, year, form, day)
    if sibling:
        pupil.links = list(sibling.links)
    else:
        add_family_contacts(rng, world, family)
    join_pastoral(world, pupil)
    if world.phase == "secondary":
        join_teaching(rng, world, pupil)


def _leave(rng: random.Random, world: World, day: date) -> None:
    settled = [p for p in world.on_roll() if p.entry < day]
    if not settled:
        return
    pupil = rng.choice(settled)
    pupil.leaving = day
    for group in world.groups.values():
        group.members.discard(pupil.num)


def _trim_marks(world: World) -> None:
    days = sorted(world.marks)
    for day in days[: max(0, len(days) - world.marks_days)]:
        del world.marks[day]


def _pupil_changes(rng: random.Random, world: World) -> None:
    """Now and then a pupil starts SEN support, or a family's FSM eligibility changes."""
    if chance(rng, 0.3):
        unsupported = [p for p in world.on_roll() if p.sen_status == "N"]
        if unsupported:
            set_sen(rng, world, rng.choice(unsupported), "K", world.day)
    families = _current_families(world)
    if families and chance(rng, 0.3):
        family = rng.choice(families)
        family.fsm = not family.fsm
        family.fsm_past = family.fsm_past or family.fsm
        family.fsm_end = None


def _current_families(world: World) -> list[Family]:
    return [f for f in world.families if any(p.on_roll for p in f.pupils)]


def _contact_change(rng: random.Random, world: World, kind: str) -> None:
    families = _current_families(world)
    if not families:
        return
    family = rng.choice(families)
    if kind == "move":
        _move_house(rng, world, family)
    elif kind == "priority":
        _swap_priorities(rng, [p for p in family.pupils if p.on_roll])
    elif family.contacts:
        contact = rng.choice(family.contacts)
        if kind == "mobile":
            others = [ph for ph in contact.phones if ph[0] != "mobile"]
            contact.phones = [("mobile", mobile_number(rng)), *others]
        else:
            contact.emails = [("home", personal_email(rng, contact.forename, contact.surname))]


def _move_house(rng: random.Random, world: World, family: Family) -> None:
    old, new = family.address, new_address(rng, world.school.region)
    old_phone = family.home_phone
    family.address = new
    family.home_phone = landline(rng, world.school.region) if old_phone else None
    for contact in family.contacts:
        if contact.address is old:
            contact.address = new
            contact.phones = [
                (kind, family.home_phone or "") if kind == "home" else (kind, number)
                for kind, number in contact.phones
            ]


def _swap_priorities(rng: random.Random, pupils: list[Pupil]) -> None:
    ranked = [p for p in pupils if len(p.links) >= 2]
    if ranked:
        pupil = rng.choice(ranked)
        pupil.links[0], pupil.links[1] = pupil.links[1], pupil.links[0]
