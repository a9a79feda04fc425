"""Families, pupils and their contacts: names, addresses, identifiers, needs, habits."""

from __future__ import annotations

import random
from datetime import date, timedelta

from agents.mis._synthetic.calendar import school_days, school_days_until
from agents.mis._synthetic.model import Address, Contact, Family, Link, Pupil, World
from agents.mis._synthetic.rand import chance, day_between, pick
from agents.mis._synthetic.tables import (
    EMAIL_DOMAINS,
    ETHNICITIES,
    HERITAGES,
    MOBILE_PREFIX,
    NICKNAMES,
    POSTCODE_INWARD_LETTERS,
    SEN_NEED_WEIGHTS,
    STREET_ROOTS,
    STREET_SUFFIXES,
    Heritage,
    Region,
)
from agents.mis.identifiers import make_uci, make_upn, uln_check_digit

_FEMALE_RELATIONSHIPS = frozenset({"Mother", "Step-mother", "Grandmother", "Aunt"})
_MALE_RELATIONSHIPS = frozenset({"Father", "Step-father", "Grandfather", "Uncle"})
_FAMILY_KINDS = (
    ("two_parents", 0.6),
    ("separated", 0.2),
    ("single_mother", 0.12),
    ("single_father", 0.03),
    ("kinship", 0.05),
)
_EXTRAS = (
    ("Grandmother", 4.0),
    ("Grandfather", 2.0),
    ("Aunt", 2.0),
    ("Uncle", 1.0),
    ("Family friend", 1.0),
)


def clean(text: str) -> str:
    """Lower-case letters and digits only: for email local parts."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def new_address(rng: random.Random, region: Region, home: bool = True) -> Address:
    """A real town and postcode district with an invented street; schools get no number."""
    street = f"{rng.choice(STREET_ROOTS)} {rng.choice(STREET_SUFFIXES)}"
    if home:
        street = f"{rng.randint(1, 180)} {street}"
        if chance(rng, 0.08):
            street = f"Flat {rng.randint(1, 24)}, {street}"
    letters = POSTCODE_INWARD_LETTERS
    inward = f"{rng.randrange(10)}{rng.choice(letters)}{rng.choice(letters)}"
    postcode = f"{rng.choice(region.outward_codes)} {inward}"
    return Address(street, rng.choice(region.localities), region.town, region.county, postcode)


def mobile_number(rng: random.Random) -> str:
    # Only 1,000 drama mobiles exist, so large schools repeat some: safety beats realism.
    return f"{MOBILE_PREFIX}{rng.randrange(1000):03d}"


def landline(rng: random.Random, region: Region) -> str:
    return f"{region.landline_prefix}{rng.randrange(1000):03d}"


def personal_email(rng: random.Random, forename: str, surname: str) -> str:
    first, last = clean(forename), clean(surname)
    local = rng.choice(
        (
            f"{first}.{last}",
            f"{first}{last}{rng.randint(1, 99)}",
            f"{first[:1]}{last}{rng.randint(70, 99)}",
        )
    )
    return f"{local}@{rng.choice(EMAIL_DOMAINS)}"


# --- families --------------------------------------------------------------------------


def new_family(rng: random.Random, world: World) -> Family:
    ethnicity = rng.choices(ETHNICITIES, cum_weights=world.ethnic_weights)[0]
    heritages = ethnicity.heritages
    if len(heritages) == 2 and chance(rng, 0.5):
        heritages = (heritages[1], heritages[0])
    mixed = len(heritages) == 2
    language = "ENG" if mixed and chance(rng, 0.85) else pick(rng, _h(heritages[0]).languages)
    fsm = chance(rng, 0.24)
    fsm_end = world.day + timedelta(days=rng.randint(20, 300)) if fsm and chance(rng, 0.1) else None
    family = Family(
        num=len(world.families) + 1,
        ethnicity=ethnicity,
        heritages=heritages,
        language=language,
        religion=pick(rng, _h(rng.choice(heritages)).religions),
        surname=rng.choice(_h(heritages[-1]).surnames),
        address=new_address(rng, world.school.region),
        home_phone=landline(rng, world.school.region) if chance(rng, 0.55) else None,
        fsm=fsm,
        fsm_end=fsm_end,
        fsm_past=fsm or chance(rng, 0.05),
        service=chance(rng, 0.01),
    )
    world.families.append(family)
    return family


def _h(key: str) -> Heritage:
    return HERITAGES[key]


# --- pupils ----------------------------------------------------------------------------


def intake_year(world: World, year: int, internal: bool) -> int:
    """Academic year in which a pupil now in `year` joined the school's first year."""
    if world.phase == "primary":
        return world.year_start - year
    if year >= 12 and not internal:
        return world.year_start - (year - 12)
    return world.year_start - (year - 7)


def entry_date(rng: random.Random, world: World, year: int) -> date:
    start = intake_year(world, year, internal=chance(rng, 0.7))
    first = school_days(start)[0]
    if chance(rng, 0.9) or first >= world.day:
        return first
    # An in-year admission: any school day since the intake, up to today.
    joined = rng.randint(start, world.year_start)
    days = school_days(joined) if joined < world.year_start else school_days_until(world.day)
    return rng.choice(days) if days else first


def date_of_birth(rng: random.Random, world: World, year: int) -> date:
    born = world.year_start - year - 5
    return day_between(rng, date(born, 9, 1), date(born + 1, 8, 31))


def new_pupil(
    rng: random.Random, world: World, family: Family, year: int, form: str, entry: date
) -> Pupil:
    heritage = _h(rng.choice(family.heritages))
    gender = "F" if chance(rng, 0.49) else "M"
    names = heritage.female if gender == "F" else heritage.male
    forename = rng.choice(names)
    twin = next((p for p in family.pupils if p.year == year), None)
    pupil = Pupil(
        num=world.next_pupil,
        family=family,
        upn=new_upn(rng, world, year, entry),
        admission_number=f"{world.next_admission:06d}",
        legal_forename=forename,
        legal_surname=family.surname,
        surname=family.surname,
        middle_name=_middle_name(rng, names, forename),
        preferred_name=NICKNAMES.get(forename) if chance(rng, 0.3) else None,
        dob=twin.dob if twin else date_of_birth(rng, world, year),
        gender=gender,
        year=year,
        form=form,
        house=family.pupils[0].house if family.pupils else rng.choice(world.houses),
        entry=entry,
    )
    world.next_admission += 1
    world.pupils[pupil.num] = pupil
    family.pupils.append(pupil)
    _add_exam_identifiers(rng, world, pupil)
    _add_needs(rng, world, pupil)
    _add_habits(rng, world, pupil)
    return pupil


def _middle_name(rng: random.Random, names: tuple[str, ...], forename: str) -> str | None:
    if not chance(rng, 0.45):
        return None
    middle = rng.choice(names)
    return None if middle == forename else middle


def new_upn(rng: random.Random, world: World, year: int, entry: date) -> str:
    """A UPN as the pupil's first school allocated it (this school or a feeder)."""
    school = world.school
    reception = world.year_start - year
    started_here = world.phase == "primary" and entry == school_days(reception)[0]
    if started_here or chance(rng, 0.1):
        la, est = school.la_code, school.establishment
        allocated = reception if started_here else entry.year
    else:
        la, est = rng.choice(school.feeder_schools)
        allocated = reception
    while True:
        upn = make_upn(la, est, allocated, rng.randint(1, 999))
        if upn not in world.used_upns:
            world.used_upns.add(upn)
            return upn


def new_uln(rng: random.Random) -> str:
    while True:
        body = str(rng.randint(100_000_000, 999_999_999))
        check = uln_check_digit(body)
        if check is not None:
            return f"{body}{check}"


def _add_exam_identifiers(rng: random.Random, world: World, pupil: Pupil) -> None:
    # ULNs are issued from age 14, candidate numbers when a pupil starts exam courses.
    if pupil.year < 10 or world.school.centre is None:
        return
    pupil.uln = new_uln(rng)
    pupil.candidate = f"{world.next_candidate:04d}"
    world.next_candidate += 1
    course_start = world.year_start - (pupil.year - (10 if pupil.year <= 11 else 12))
    pupil.uci = make_uci(world.school.centre, course_start, pupil.candidate)


def _add_needs(rng: random.Random, world: World, pupil: Pupil) -> None:
    roll = rng.random()
    status = "E" if roll < 0.03 else "K" if roll < 0.18 else "N"
    start = pupil.entry if pupil.entry < world.day else world.day
    if status == "N":
        if chance(rng, 0.05) and start < world.day:
            began = day_between(rng, start, world.day)
            pupil.sen_history = [("K", began, day_between(rng, began, world.day))]
        return
    set_sen(rng, world, pupil, status, start)


def set_sen(rng: random.Random, world: World, pupil: Pupil, status: str, since: date) -> None:
    """Give `pupil` SEN `status` with needs and a provision history from `since`."""
    k_start = day_between(rng, since, world.day) if since < world.day else world.day
    history: list[tuple[str, date, date | None]] = [("K", k_start, None)]
    if status == "E":
        e_start = day_between(rng, k_start, world.day)
        history = [("E", e_start, None)]
        if e_start > k_start:
            history.insert(0, ("K", k_start, e_start - timedelta(days=1)))
    weights = SEN_NEED_WEIGHTS[(world.phase, status)]
    needs = [pick(rng, weights)]
    if chance(rng, 0.3):
        second = pick(rng, weights)
        if second != needs[0]:
            needs.append(second)
    pupil.sen_status, pupil.sen_needs = status, needs
    pupil.sen_history = [h for h in pupil.sen_history if h[2] is not None] + history


def _add_habits(rng: random.Random, world: World, pupil: Pupil) -> None:
    """Attendance and lateness propensities: most attend well, a few are persistent absentees."""
    roll = rng.random()
    if roll < 0.78:
        pupil.attendance_rate, pupil.unauthorised_share = rng.uniform(0.94, 1.0), 0.1
    elif roll < 0.95:
        pupil.attendance_rate, pupil.unauthorised_share = rng.uniform(0.85, 0.94), 0.3
    else:
        pupil.attendance_rate, pupil.unauthorised_share = rng.uniform(0.6, 0.85), 0.5
    pupil.late_rate = rng.uniform(0.0, 0.06)
    # Sanctions cluster in a minority, and more among poor attenders.
    pupil.conduct = rng.lognormvariate(0.0, 1.0) * (1.0 + 10.0 * (1.0 - pupil.attendance_rate))
    pupil.ability = rng.gauss(0.0, 1.0)
    pupil.gifted = world.phase == "secondary" and pupil.ability > 1.75
    pupil.has_photo = chance(rng, 0.95)
    if world.phase == "secondary":
        pupil.school_email = (
            f"{clean(pupil.legal_forename)[:1]}{clean(pupil.legal_surname)}{pupil.num}"
            f"@{world.school.domain}"
        )
        if pupil.year >= 9 and chance(rng, 0.45):
            pupil.mobile = mobile_number(rng)


# --- contacts --------------------------------------------------------------------------


def new_contact(
    rng: random.Random,
    world: World,
    family: Family,
    relationship: str,
    heritage: str,
    at_home: bool = True,
) -> Contact:
    female = relationship in _FEMALE_RELATIONSHIPS or (
        relationship not in _MALE_RELATIONSHIPS and chance(rng, 0.7)
    )
    forename = rng.choice(_h(heritage).parent_names(female))
    surname = family.surname
    if relationship not in {"Mother", "Father"} or (female and chance(rng, 0.3)):
        surname = rng.choice(_h(heritage).surnames)
    title = _title(rng, female)
    region = world.school.region
    address = family.address if at_home else new_address(rng, region)
    phones = [("mobile", mobile_number(rng))]
    if at_home and family.home_phone:
        phones.append(("home", family.home_phone))
    if chance(rng, 0.2):
        phones.append(("work", landline(rng, region)))
    emails = [("home", personal_email(rng, forename, surname))] if chance(rng, 0.85) else []
    contact = Contact(world.next_contact, title, forename, surname, address, phones, emails)
    world.next_contact += 1
    family.contacts.append(contact)
    return contact


def _title(rng: random.Random, female: bool) -> str:
    if chance(rng, 0.03):
        return "Dr"
    if not female:
        return "Mr"
    return pick(rng, (("Mrs", 0.55), ("Ms", 0.27), ("Miss", 0.18)))


def add_family_contacts(rng: random.Random, world: World, family: Family) -> None:
    """Create the family's contacts and link every pupil to them in priority order."""
    if len(family.pupils) == 1 and chance(rng, 0.008):
        links = _foster_links(rng, world, family)
        family.pupils[0].looked_after = True
    else:
        links = _parent_links(rng, world, family, pick(rng, _FAMILY_KINDS))
    for pupil in family.pupils:
        pupil.links = list(links)
    if len(family.pupils) >= 2 and chance(rng, 0.15):
        _make_half_sibling(rng, world, family, family.pupils[-1])


def _parent_links(rng: random.Random, world: World, family: Family, kind: str) -> list[Link]:
    mum_h, dad_h = family.heritages[0], family.heritages[-1]
    if kind == "kinship":
        return [
            Link(new_contact(rng, world, family, "Grandmother", mum_h), "Grandmother", True),
            Link(new_contact(rng, world, family, "Grandfather", mum_h), "Grandfather", True),
        ]
    links: list[Link] = []
    if kind != "single_father":
        links.append(Link(new_contact(rng, world, family, "Mother", mum_h), "Mother", True))
    if kind != "single_mother":
        away = kind == "separated"
        father = new_contact(rng, world, family, "Father", dad_h, at_home=not away)
        links.append(Link(father, "Father", True))
    if len(links) == 2 and chance(rng, 0.2 if kind == "two_parents" else 0.15):
        links.reverse()  # the father is the first point of contact
    if kind == "separated" and chance(rng, 0.25):
        step = new_contact(rng, world, family, "Step-father", mum_h)
        links.append(Link(step, "Step-father", False))
    if chance(rng, 0.35 if len(links) > 1 else 0.7):
        relation = pick(rng, _EXTRAS)
        links.append(Link(new_contact(rng, world, family, relation, mum_h), relation, False))
    return links


def _foster_links(rng: random.Random, world: World, family: Family) -> list[Link]:
    carer = new_contact(rng, world, family, "Foster carer", "british")
    worker = new_contact(rng, world, family, "Social worker", "british", at_home=False)
    return [Link(carer, "Foster carer", False), Link(worker, "Social worker", False)]


def _make_half_sibling(rng: random.Random, world: World, family: Family, pupil: Pupil) -> None:
    """A blended family: the household's father is this child's step-father.

    The child's own father lives elsewhere and ranks second, so siblings rank the same
    contacts differently, which is why contacts carry per-pupil links.
    """
    fathers = [
        i
        for i, link in enumerate(pupil.links)
        if link.relationship == "Father" and link.contact.address is family.address
    ]
    if not fathers or fathers[0] == 0:
        return
    i = fathers[0]
    own = new_contact(rng, world, family, "Father", family.heritages[-1], at_home=False)
    own.surname = rng.choice(_h(family.heritages[-1]).surnames)
    pupil.legal_surname = own.surname  # known by the household's surname, legally his
    step = Link(pupil.links[i].contact, "Step-father", False)
    pupil.links = [*pupil.links[:i], Link(own, "Father", True), step, *pupil.links[i + 1 :]]
