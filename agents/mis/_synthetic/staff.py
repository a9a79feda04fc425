"""Staff: teachers by department, leadership, pastoral roles and support staff."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import date, timedelta
from itertools import chain, count

from agents.mis._synthetic.model import Group, Staff, World
from agents.mis._synthetic.people import clean, landline, new_address
from agents.mis._synthetic.rand import chance, day_between, pick
from agents.mis._synthetic.tables import HERITAGES, SUPPORT_ROLES

_OTHER_HERITAGES = tuple(k for k in HERITAGES if k != "british")


def hire(
    rng: random.Random,
    world: World,
    roles: list[str],
    teaching_cap: int = 0,
    department: str | None = None,
) -> Staff:
    female = chance(rng, 0.85 if world.phase == "primary" else 0.65)
    heritage = HERITAGES["british" if chance(rng, 0.85) else rng.choice(_OTHER_HERITAGES)]
    forename = rng.choice(heritage.parent_names(female))
    surname = rng.choice(heritage.surnames)
    dob = day_between(rng, _years_before(world.day, 64), _years_before(world.day, 23))
    qualified = max(_years_after(dob, 22), _years_before(world.day, 25))
    staff = Staff(
        num=len(world.staff) + 1,
        title=_title(rng, female, teaching_cap > 0),
        forename=forename,
        surname=surname,
        gender="F" if female else "M",
        dob=dob,
        address=new_address(rng, world.school.region),
        start=day_between(rng, qualified, world.day - timedelta(days=1)),
        roles=roles,
        department=department,
        teaching_cap=teaching_cap,
        has_photo=chance(rng, 0.9),
    )
    _add_work_details(rng, world, staff)
    if department is not None:
        same = sum(1 for s in world.staff if s.department == department)
        staff.room = f"{department}{same + 1}"
    world.staff.append(staff)
    return staff


def _years_before(day: date, years: int) -> date:
    return day.replace(year=day.year - years, day=min(day.day, 28))


def _years_after(day: date, years: int) -> date:
    return day.replace(year=day.year + years, day=min(day.day, 28))


def _title(rng: random.Random, female: bool, teacher: bool) -> str:
    if teacher and chance(rng, 0.03):
        return "Dr"
    if not female:
        return "Mr"
    return pick(rng, (("Mrs", 0.5), ("Ms", 0.28), ("Miss", 0.22)))


def _add_work_details(rng: random.Random, world: World, staff: Staff) -> None:
    """Unique timetable code and email; a direct line for some, the switchboard otherwise."""
    first, last = staff.forename.upper(), clean(staff.surname).upper()
    codes = (first[:1] + last[:2], first[:2] + last[:1], first[:1] + last[:1] + last[-1:])
    numbered = (f"{first[:1]}{last[:1]}{n}" for n in count(2))
    staff.code = _unique(chain(codes, numbered), {s.code for s in world.staff})
    local, domain = f"{clean(staff.forename)[:1]}{clean(staff.surname)}", world.school.domain
    emails = chain([f"{local}@{domain}"], (f"{local}{n}@{domain}" for n in count(2)))
    staff.email = _unique(emails, {s.email for s in world.staff})
    direct = chance(rng, 0.3)
    staff.phone = landline(rng, world.school.region) if direct else world.school.telephone


def _unique(options: Iterable[str], taken: set[str]) -> str:
    return next(option for option in options if option not in taken)


def hire_support(rng: random.Random, world: World, count: int) -> None:
    plan = SUPPORT_ROLES[world.phase]
    left = count
    for role, wanted in plan:
        n = left if wanted == 0 else min(wanted, left)
        for _ in range(n):
            hire(rng, world, [role])
        left -= n


def link_staff(group: Group, staff: Staff) -> None:
    """Record that `staff` teaches, tutors or leads `group`, on both sides."""
    if staff.id not in group.staff:
        group.staff.append(staff.id)
    if group.id not in staff.groups:
        staff.groups.append(group.id)


def assign_pastoral(rng: random.Random, world: World) -> None:
    """Tutors for every form, a head of year per year, a head of each house."""
    teachers = [s for s in world.staff if s.teaching_cap >= 20]
    if not teachers:
        teachers = [s for s in world.staff if s.teaching_cap > 0] or world.staff[:1]
    tutors = teachers[:]
    rng.shuffle(tutors)
    forms = [g for g in world.groups.values() if g.group_type == "registration"]
    for i, form in enumerate(forms):
        tutor = _class_teacher(world, form) or tutors[i % len(tutors)]
        link_staff(form, tutor)
        _add_role(tutor, "Class Teacher" if world.phase == "primary" else "Form Tutor")
    led = ("house",) if world.phase == "primary" else ("year", "house")
    if world.phase == "primary":
        _primary_year_teams(world)
    leads = [g for g in world.groups.values() if g.group_type in led]
    for i, group in enumerate(leads):
        lead = tutors[-1 - i % len(tutors)]
        link_staff(group, lead)
        _add_role(lead, "Head of Year" if group.group_type == "year" else "Head of House")


def _primary_year_teams(world: World) -> None:
    """A primary has no heads of year: a year group's staff are its class teachers."""
    forms = [g for g in world.groups.values() if g.group_type == "registration"]
    for year in (g for g in world.groups.values() if g.group_type == "year"):
        for form in (f for f in forms if f.year == year.year):
            for staff_id in form.staff[:1]:
                link_staff(year, next(s for s in world.staff if s.id == staff_id))


def _class_teacher(world: World, form: Group) -> Staff | None:
    """In a primary the class teacher is the tutor: whoever teaches the class most."""
    if world.phase != "primary":
        return None
    lessons = [x.staff_id for x in world.lessons if x.group_id == form.id and x.staff_id]
    if not lessons:
        return None
    top = max(set(lessons), key=lambda sid: (lessons.count(sid), sid))
    return next(s for s in world.staff if s.id == top)


def _add_role(staff: Staff, role: str) -> None:
    if role not in staff.roles:
        staff.roles.append(role)
