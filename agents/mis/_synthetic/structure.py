"""School structure: forms, houses, teaching groups, the timetable and who teaches what.

Secondary timetables are built the way schools block them: a half-year band's sets of a
subject meet at the same time, and option blocks span the whole year.  Teachers are then
placed greedily so nobody, and no room, is ever double-booked.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from agents.mis._synthetic.model import Group, Lesson, Pupil, Staff, World, year_label
from agents.mis._synthetic.staff import hire, hire_support, link_staff
from agents.mis._synthetic.tables import (
    KS3_CURRICULUM,
    KS4_CORE,
    KS4_OPTIONS,
    KS5_OPTIONS,
    PRIMARY_AFTERNOON,
    ROOM_PREFIXES,
    SUBJECTS,
)

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")
DAY_NAMES = {
    "Mon": "Monday",
    "Tue": "Tuesday",
    "Wed": "Wednesday",
    "Thu": "Thursday",
    "Fri": "Friday",
}
PERIOD_KEYS = tuple(f"{d}:{n}" for d in DAYS for n in range(1, 6))
TIMES = {
    "secondary": {
        1: ("08:50", "09:50"),
        2: ("09:50", "10:50"),
        3: ("11:10", "12:10"),
        4: ("12:10", "13:10"),
        5: ("13:55", "14:55"),
    },
    "primary": {
        1: ("09:00", "10:00"),
        2: ("10:20", "11:20"),
        3: ("11:20", "12:00"),
        4: ("13:00", "14:00"),
        5: ("14:00", "15:10"),
    },
}
FORM_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
FULL_TIME_PERIODS = 22  # of 25: teachers keep some non-contact time


# --- forms, houses, pastoral groups ----------------------------------------------------


def form_names(year: int, size: int) -> list[str]:
    per_form = 22 if year >= 12 else 30
    count = max(1, math.ceil(size / per_form))
    prefix = "R" if year == 0 else str(year)
    return [prefix + _letter(i) for i in range(count)]


def _letter(i: int) -> str:
    n = len(FORM_LETTERS)
    return FORM_LETTERS[i] if i < n else FORM_LETTERS[i // n - 1] + FORM_LETTERS[i % n]


def pastoral_group_id(kind: str, name: str) -> str:
    return f"grp-{kind}-{name.lower().replace(' ', '-')}"


def build_pastoral_groups(world: World) -> None:
    """Year, registration and house groups, with current members."""
    for year in world.years:
        label = year_label(year)
        _add(world, Group(pastoral_group_id("year", label), label, "year", year))
        for form in world.forms[year]:
            _add(world, Group(pastoral_group_id("reg", form), form, "registration", year))
    for house in world.houses:
        _add(world, Group(pastoral_group_id("house", house), house, "house", None))
    for pupil in world.on_roll():
        join_pastoral(world, pupil)


def join_pastoral(world: World, pupil: Pupil) -> None:
    world.groups[pastoral_group_id("year", year_label(pupil.year))].members.add(pupil.num)
    world.groups[pastoral_group_id("reg", pupil.form)].members.add(pupil.num)
    world.groups[pastoral_group_id("house", pupil.house)].members.add(pupil.num)


def _add(world: World, group: Group) -> Group:
    world.groups[group.id] = group
    return group


# --- secondary teaching groups ---------------------------------------------------------


def build_teaching_groups(rng: random.Random, world: World) -> None:
    by_form: dict[str, list[Pupil]] = {f: [] for forms in world.forms.values() for f in forms}
    for pupil in world.on_roll():
        by_form[pupil.form].append(pupil)
    for year in world.years:
        forms = world.forms[year]
        if year <= 9:
            _banded(rng, world, year, forms, by_form, KS3_CURRICULUM, PERIOD_KEYS)
        elif year <= 11:
            pupils = [p for f in forms for p in by_form[f]]
            option_slots = _allocate(rng, PERIOD_KEYS, [(b, n) for b, n, _ in KS4_OPTIONS])
            _options(rng, world, year, pupils, KS4_OPTIONS, option_slots, max_size=28)
            taken = {k for keys in option_slots.values() for k in keys}
            rest = tuple(k for k in PERIOD_KEYS if k not in taken)
            _banded(rng, world, year, forms, by_form, KS4_CORE, rest)
        else:
            pupils = [p for f in forms for p in by_form[f]]
            slots = _allocate(rng, PERIOD_KEYS, [(b, n) for b, n, _ in KS5_OPTIONS])
            _options(rng, world, year, pupils, KS5_OPTIONS, slots, max_size=20)


def _bands(forms: list[str]) -> list[tuple[str, list[str]]]:
    if len(forms) < 2:
        return [("x", forms)]
    half = (len(forms) + 1) // 2
    return [("x", forms[:half]), ("y", forms[half:])]


def _allocate(
    rng: random.Random, keys: Sequence[str], plan: Sequence[tuple[str, int]]
) -> dict[str, tuple[str, ...]]:
    """Share the period `keys` out: each label gets its number of periods, at random."""
    shuffled = list(keys)
    rng.shuffle(shuffled)
    out: dict[str, tuple[str, ...]] = {}
    for label, n in plan:
        out[label] = tuple(sorted(shuffled[:n], key=PERIOD_KEYS.index))
        shuffled = shuffled[n:]
    return out


def _banded(
    rng: random.Random,
    world: World,
    year: int,
    forms: list[str],
    by_form: dict[str, list[Pupil]],
    curriculum: Sequence[tuple[str, int, bool]],
    keys: Sequence[str],
) -> None:
    """Half-year bands: ability sets for core subjects, tutor groups for the rest."""
    for band, band_forms in _bands(forms):
        slots = _allocate(rng, keys, [(code, n) for code, n, _ in curriculum])
        pupils = [p for f in band_forms for p in by_form[f]]
        for code, _, setted in curriculum:
            label = f"{year}{band}/{code}"
            if setted:
                ranked = sorted(pupils, key=lambda p: -(p.ability + rng.gauss(0.0, 0.4)))
                for i, chunk in enumerate(_split(ranked, len(band_forms))):
                    _teaching(world, year, f"{label}{i + 1}", code, slots[code], chunk)
            else:
                for i, form in enumerate(band_forms):
                    _teaching(world, year, f"{label}{i + 1}", code, slots[code], by_form[form])


def _options(
    rng: random.Random,
    world: World,
    year: int,
    pupils: list[Pupil],
    blocks: Sequence[tuple[str, int, tuple[str, ...]]],
    slots: dict[str, tuple[str, ...]],
    max_size: int,
) -> None:
    chosen: dict[tuple[str, str], list[Pupil]] = {
        (block, code): [] for block, _, codes in blocks for code in codes
    }
    for pupil in pupils:
        for block, code in choose_options(rng, blocks):
            chosen[(block, code)].append(pupil)
    for (block, code), members in chosen.items():
        for i, chunk in enumerate(_split(members, math.ceil(len(members) / max_size))):
            group = _teaching(
                world, year, f"{year}{block}/{code}{i + 1}", code, slots[block], chunk
            )
            if group is not None:
                group.block = block


def choose_options(
    rng: random.Random, blocks: Sequence[tuple[str, int, tuple[str, ...]]]
) -> list[tuple[str, str]]:
    """One subject per block, never the same twice; Further Maths only alongside Maths."""
    taken: list[str] = []
    out: list[tuple[str, str]] = []
    for block, _, codes in blocks:
        options = [c for c in codes if c not in taken and (c != "Fm" or "Ma" in taken)]
        code = rng.choice(options)
        taken.append(code)
        out.append((block, code))
    return out


def _split(items: list[Pupil], parts: int) -> list[list[Pupil]]:
    n = len(items)
    return [items[i * n // parts : (i + 1) * n // parts] for i in range(parts)] if parts else []


def teaching_group_id(name: str) -> str:
    return "grp-tg-" + name.replace("/", "-")


def _teaching(
    world: World, year: int, name: str, code: str, periods: tuple[str, ...], members: list[Pupil]
) -> Group | None:
    if not members:
        return None
    group = Group(
        teaching_group_id(name), name, "teaching", year, SUBJECTS[code], code, periods=periods
    )
    for pupil in members:
        group.members.add(pupil.num)
        pupil.groups.append(group.id)
    return _add(world, group)


# --- secondary staffing and timetable --------------------------------------------------


def staff_secondary(rng: random.Random, world: World) -> None:
    """Hire a head, departments sized to their teaching load, leaders and support staff."""
    groups = [g for g in world.groups.values() if g.group_type == "teaching"]
    demand: Counter[str] = Counter()
    for group in groups:
        demand[ROOM_PREFIXES[group.code or ""]] += len(group.periods)
    total = max(len(demand), round(len(world.on_roll()) / 16) - 1)
    hire(rng, world, ["Headteacher", "Designated Safeguarding Lead"])
    for dept, n in _apportion(demand, total).items():
        for i in range(n):
            roles = ["Teacher", "Head of Department"] if i == 0 else ["Teacher"]
            hire(rng, world, roles, FULL_TIME_PERIODS, dept)
    _appoint_leaders(world)
    teachers = [s for s in world.staff if s.teaching_cap]
    for group in sorted(groups, key=lambda g: (-len(g.periods), g.id)):
        _assign_teacher(rng, world, group, teachers)
    hire_support(rng, world, round(total * 0.7))


def _apportion(demand: Counter[str], total: int) -> dict[str, int]:
    """Largest-remainder shares of `total`, at least one per department with demand."""
    load = sum(demand.values()) or 1
    exact = {d: total * n / load for d, n in sorted(demand.items())}
    out = {d: max(1, int(x)) for d, x in exact.items()}
    spare = total - sum(out.values())
    for d in sorted(exact, key=lambda d: -(exact[d] - int(exact[d])))[: max(spare, 0)]:
        out[d] += 1
    return out


def _appoint_leaders(world: World) -> None:
    teachers = [s for s in world.staff if s.teaching_cap and "Head of Department" not in s.roles]
    posts = [
        ("Deputy Headteacher", 10),
        ("Deputy Headteacher", 10),
        ("Assistant Headteacher", 14),
        ("Assistant Headteacher", 14),
        ("Assistant Headteacher", 14),
        ("SENCo", 12),
    ]
    for (role, cap), staff in zip(posts, teachers[:: max(1, len(teachers) // 6)], strict=False):
        staff.roles.append(role)
        staff.teaching_cap = cap


def _assign_teacher(rng: random.Random, world: World, group: Group, teachers: list[Staff]) -> None:
    need = set(group.periods)
    dept = ROOM_PREFIXES[group.code or ""]
    specialists = [s for s in teachers if s.department == dept]
    teacher = _free(specialists, need) or _free(teachers, need)
    if teacher is None:  # nobody can take it: the school recruits
        teacher = hire(rng, world, ["Teacher"], FULL_TIME_PERIODS, dept)
        teachers.append(teacher)
    teacher.busy |= need
    link_staff(group, teacher)
    for key in group.periods:
        world.lessons.append(_lesson(world, group, key, teacher))


def _free(pool: list[Staff], need: set[str]) -> Staff | None:
    fits = [s for s in pool if len(s.busy) + len(need) <= s.teaching_cap and not s.busy & need]
    return min(fits, key=lambda s: (len(s.busy), s.num), default=None)


def _lesson(
    world: World,
    group: Group,
    key: str,
    teacher: Staff | None,
    room: str | None = None,
    subject: str | None = None,
) -> Lesson:
    day, n = key.split(":")
    start, end = TIMES[world.phase][int(n)]
    slug = group.id.removeprefix("grp-tg-").removeprefix("grp-reg-")
    return Lesson(
        id=f"les-{slug}-{day.lower()}-{n}",
        period=key,
        start=start,
        end=end,
        group_id=group.id,
        subject=subject or group.subject or "",
        room=room or (teacher.room if teacher else None),
        staff_id=teacher.id if teacher else None,
    )


# --- primary staffing and timetable ----------------------------------------------------


def staff_primary(rng: random.Random, world: World) -> None:
    """Class teachers teach their class; spare teachers cover an afternoon (PPA time)."""
    classes = [g for g in world.groups.values() if g.group_type == "registration"]
    total = max(len(classes), round(len(world.on_roll()) / 16) - 1)
    hire(rng, world, ["Headteacher", "Designated Safeguarding Lead"])
    class_teachers = [hire(rng, world, ["Teacher"], 25) for _ in classes]
    spares = [hire(rng, world, ["Teacher"], 20) for _ in range(total - len(classes))]
    if class_teachers:
        class_teachers[0].roles.append("Deputy Headteacher")
    (spares or class_teachers or world.staff)[-1].roles.append("SENCo")
    rooms_taken: set[tuple[str, str]] = set()
    for i, (group, teacher) in enumerate(zip(classes, class_teachers, strict=True)):
        _primary_lessons(rng, world, (i, group, teacher), spares, rooms_taken)
    hire_support(rng, world, round(total * 1.2))


def _primary_lessons(
    rng: random.Random,
    world: World,
    klass: tuple[int, Group, Staff],
    spares: list[Staff],
    rooms_taken: set[tuple[str, str]],
) -> None:
    index, group, teacher = klass
    year = group.year or 0
    afternoon = [s for s in PRIMARY_AFTERNOON if year >= 3 or s != "French"]
    rng.shuffle(afternoon)
    ppa = spares[(index // 5) % len(spares)] if spares else None
    for d, day in enumerate(DAYS):
        for n in range(1, 6):
            key = f"{day}:{n}"
            if n <= 3:
                subject = ("English", "Mathematics", "Phonics" if year <= 2 else "Reading")[n - 1]
            else:
                subject = afternoon[(2 * d + n - 4) % len(afternoon)]
            # PPA time: one afternoon a week a spare teacher takes the class.
            cover = ppa and d == index % 5 and n >= 4 and key not in ppa.busy
            who = ppa if cover and ppa else teacher
            who.busy.add(key)
            room = _primary_room(subject, key, f"C{index + 1:02d}", rooms_taken)
            world.lessons.append(_lesson(world, group, key, who, room, subject))
            link_staff(group, who)


def _primary_room(subject: str, key: str, classroom: str, taken: set[tuple[str, str]]) -> str:
    """PE goes to the hall, or the playground when the hall is in use."""
    options = ("HALL", "PLAYGROUND") if subject == "Physical Education" else ()
    room = next((r for r in options if (r, key) not in taken), classroom)
    taken.add((room, key))
    return room


# --- joiners ---------------------------------------------------------------------------


def join_teaching(rng: random.Random, world: World, pupil: Pupil) -> None:
    """Place a new pupil in the same kinds of group their year-mates are in."""
    year, forms = pupil.year, world.forms[pupil.year]
    if year <= 11:
        band, band_forms = next((b, fs) for b, fs in _bands(forms) if pupil.form in fs)
        curriculum = KS3_CURRICULUM if year <= 9 else KS4_CORE
        for code, _, setted in curriculum:
            prefix = f"{year}{band}/{code}"
            if setted:
                _enrol(pupil, _emptiest(world, prefix))
            else:
                name = f"{prefix}{band_forms.index(pupil.form) + 1}"
                _enrol(pupil, world.groups.get(teaching_group_id(name)))
    if year >= 10:
        blocks = KS4_OPTIONS if year <= 11 else KS5_OPTIONS
        for block, code in choose_options(rng, blocks):
            _enrol(pupil, _emptiest(world, f"{year}{block}/{code}"))


def _emptiest(world: World, prefix: str) -> Group | None:
    start = teaching_group_id(prefix)
    matches = [
        g for g in world.groups.values() if g.id.startswith(start) and g.id[len(start) :].isdigit()
    ]
    return min(matches, key=lambda g: (len(g.members), g.id), default=None)


def _enrol(pupil: Pupil, group: Group | None) -> None:
    if group is not None:
        group.members.add(pupil.num)
        pupil.groups.append(group.id)
