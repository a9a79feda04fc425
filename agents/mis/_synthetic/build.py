"""Build a whole synthetic school for one day, deterministically from a seed."""

from __future__ import annotations

import itertools
import random
import re
from datetime import date

from agents.mis._synthetic.activity import Roster, behaviour_day, register_day, seed_tallies
from agents.mis._synthetic.calendar import academic_year, school_days_until
from agents.mis._synthetic.model import Pupil, SchoolInfo, World
from agents.mis._synthetic.people import (
    add_family_contacts,
    clean,
    entry_date,
    landline,
    new_address,
    new_family,
    new_pupil,
)
from agents.mis._synthetic.rand import chance, day_between, stream
from agents.mis._synthetic.staff import assign_pastoral
from agents.mis._synthetic.structure import (
    build_pastoral_groups,
    build_teaching_groups,
    form_names,
    staff_primary,
    staff_secondary,
)
from agents.mis._synthetic.tables import (
    ETHNICITIES,
    HOUSES,
    PRIMARY_SUFFIXES,
    REGIONS,
    SCHOOL_PLACES,
    SECONDARY_SUFFIXES,
    Region,
)

PRIMARY_YEARS = tuple(range(0, 7))
SECONDARY_YEARS = tuple(range(7, 14))
_SIBLING_FAMILY_SHARE = 0.163  # families of 2-3 at this rate put ~30% of pupils with siblings
_DFE_NUMBER = re.compile(r"^\d{7}$")


def build_world(
    seed: int,
    pupils: int,
    phase: str,
    school_name: str | None,
    dfe_number: str | None,
    day: date,
    marks_days: int,
) -> World:
    rng = stream(seed, "school")
    school = make_school(rng, phase, school_name, dfe_number)
    years = PRIMARY_YEARS if phase == "primary" else SECONDARY_YEARS
    tilt = rng.uniform(0.5, 2.5)  # how diverse this school's community is
    weights = [e.weight * (1.0 if e.code == "WBRI" else tilt) for e in ETHNICITIES]
    world = World(
        seed,
        phase,
        day,
        academic_year(day),
        marks_days,
        school,
        years,
        tuple(itertools.accumulate(weights)),
    )
    world.houses = sorted(rng.sample(HOUSES, 4))
    sizes = year_sizes(years, pupils)
    world.forms = {y: form_names(y, sizes[y]) for y in years}
    _populate(stream(seed, "pupils"), world, sizes)
    window = school_days_until(day)[-marks_days:] if marks_days else ()
    window_start = window[0] if window else date.fromordinal(day.toordinal() + 1)
    _historic_leavers(stream(seed, "leavers"), world, sizes, window_start)
    _number_admissions(world)
    structure_rng = stream(seed, "structure")
    build_pastoral_groups(world)
    if phase == "secondary":
        build_teaching_groups(structure_rng, world)
        staff_secondary(structure_rng, world)
    else:
        staff_primary(structure_rng, world)
    assign_pastoral(structure_rng, world)
    _history(stream(seed, "history"), world, window, window_start)
    return world


def make_school(
    rng: random.Random, phase: str, name: str | None, dfe_number: str | None
) -> SchoolInfo:
    region, la_code, establishment = _place(rng, phase, dfe_number)
    place = rng.choice(SCHOOL_PLACES)
    suffixes = PRIMARY_SUFFIXES if phase == "primary" else SECONDARY_SUFFIXES
    name = name or f"{place} {rng.choice(suffixes)}"
    # An LA we have no places for still gets a school, somewhere plausible but unnamed.
    known_la = region is not None
    region = region if region is not None else rng.choice(REGIONS)
    academy = "Academy" in name
    return SchoolInfo(
        name=name,
        dfe_number=f"{la_code:03d}{establishment:04d}",
        la_code=la_code,
        establishment=establishment,
        urn=str(rng.randint(100_000, 149_999)),
        centre=str(rng.randint(10_000, 79_999)) if phase == "secondary" else None,
        region=region,
        local_authority=region.local_authority if known_la else None,
        address=new_address(rng, region, home=False),
        telephone=landline(rng, region),
        domain=f"{clean(name)}.example.org",
        data_controller=f"{name.split()[0]} Learning Trust" if academy else name,
        feeder_schools=tuple(
            (
                region.la_code if chance(rng, 0.85) else rng.choice(REGIONS).la_code,
                rng.randint(2000, 3999),
            )
            for _ in range(8)
        ),
    )


def _place(
    rng: random.Random, phase: str, dfe_number: str | None
) -> tuple[Region | None, int, int]:
    if dfe_number is None:
        chosen = rng.choice(REGIONS)
        low, high = (2000, 3999) if phase == "primary" else (4000, 4999)
        return chosen, chosen.la_code, rng.randint(low, high)
    if not _DFE_NUMBER.match(dfe_number):
        raise ValueError("dfe_number is 7 digits: LA code then establishment number")
    la_code, establishment = int(dfe_number[:3]), int(dfe_number[3:])
    return next((r for r in REGIONS if r.la_code == la_code), None), la_code, establishment


def year_sizes(years: tuple[int, ...], pupils: int) -> dict[int, int]:
    """Split the roll over year groups; sixth-form years are about half a main year."""
    weights = {y: 0.55 if y >= 12 else 1.0 for y in years}
    total = sum(weights.values())
    exact = {y: pupils * w / total for y, w in weights.items()}
    sizes = {y: int(x) for y, x in exact.items()}
    by_remainder = sorted(years, key=lambda y: (-(exact[y] - sizes[y]), y))
    for y in by_remainder[: pupils - sum(sizes.values())]:
        sizes[y] += 1
    return sizes


def _populate(rng: random.Random, world: World, sizes: dict[int, int]) -> None:
    """Carve the roll into families (some with siblings) and create their pupils."""
    slots = [y for y in world.years for _ in range(sizes[y])]
    rng.shuffle(slots)
    per_form = {f: 0 for forms in world.forms.values() for f in forms}
    i = 0
    while i < len(slots):
        size = 1 if not chance(rng, _SIBLING_FAMILY_SHARE) else (2 if chance(rng, 0.8) else 3)
        family = new_family(rng, world)
        for year in slots[i : i + size]:
            form = min(world.forms[year], key=lambda f: per_form[f])
            per_form[form] += 1
            new_pupil(rng, world, family, year, form, entry_date(rng, world, year))
        add_family_contacts(rng, world, family)
        i += size


def _historic_leavers(
    rng: random.Random, world: World, sizes: dict[int, int], window_start: date
) -> None:
    """Pupils who left earlier this year: off roll, still held by the MIS."""
    days = [d for d in school_days_until(world.day) if d < window_start]
    count = round(sum(sizes.values()) * 0.03 * len(days) / 190)
    for _ in range(count):
        year = rng.choices(world.years, weights=[sizes[y] + 1 for y in world.years])[0]
        entry = entry_date(rng, world, year)
        if entry >= days[-1]:
            continue
        family = new_family(rng, world)
        pupil = new_pupil(rng, world, family, year, world.forms[year][0], entry)
        pupil.leaving = day_between(rng, max(entry, days[0]), days[-1])
        add_family_contacts(rng, world, family)


def _number_admissions(world: World) -> None:
    """Admission numbers follow the order pupils were admitted in."""
    ordered: list[Pupil] = sorted(world.pupils.values(), key=lambda p: (p.entry, p.num))
    for n, pupil in enumerate(ordered, start=1):
        pupil.admission_number = f"{n:06d}"
    world.next_admission = len(ordered) + 1


def _history(
    rng: random.Random, world: World, window: tuple[date, ...], window_start: date
) -> None:
    seed_tallies(rng, world, window_start)
    for day in window:
        register_day(rng, world, day)
    roster = Roster(world.on_roll())
    for day in school_days_until(world.day):
        behaviour_day(rng, world, day, roster)
