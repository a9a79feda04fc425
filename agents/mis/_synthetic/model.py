"""The synthetic school's state: plain mutable objects the generators build and mutate.

Records are rendered from this state on every extraction, so a mutation shows up in
every area that derives from it (a house move changes pupils and their contacts alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from agents.mis._synthetic.tables import Ethnicity, Region


def year_label(year: int) -> str:
    return "Reception" if year == 0 else f"Year {year}"


@dataclass(slots=True)
class Address:
    line1: str
    locality: str | None
    town: str
    county: str | None
    postcode: str

    def lines(self) -> list[str]:
        parts = [self.line1, self.locality, self.town, self.county, self.postcode]
        return [p for p in parts if p]


@dataclass(slots=True)
class Contact:
    num: int
    title: str
    forename: str
    surname: str
    address: Address
    phones: list[tuple[str, str]]  # (type, number); the first is primary
    emails: list[tuple[str, str]]

    @property
    def id(self) -> str:
        return f"con-{self.num:06d}"


@dataclass(slots=True)
class Link:
    """A pupil's tie to a contact; a pupil's links are kept in priority order."""

    contact: Contact
    relationship: str
    parental_responsibility: bool


@dataclass(slots=True)
class Family:
    num: int
    ethnicity: Ethnicity
    heritages: tuple[str, ...]
    language: str
    religion: str
    surname: str
    address: Address
    home_phone: str | None
    fsm: bool
    fsm_end: date | None
    fsm_past: bool  # eligible at some point in the last six years
    service: bool
    pupils: list[Pupil] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)


@dataclass(slots=True)
class Tally:
    """Year-to-date session counts behind students.attendance_summary."""

    possible: int = 0
    present: int = 0
    aea: int = 0
    authorised: int = 0
    unauthorised: int = 0
    missing: int = 0
    late: int = 0


@dataclass(slots=True)
class Pupil:
    num: int
    family: Family
    upn: str
    admission_number: str
    legal_forename: str
    legal_surname: str
    surname: str  # known-as surname; differs from the legal one in blended families
    middle_name: str | None
    preferred_name: str | None
    dob: date
    gender: str
    year: int  # 0 is Reception
    form: str  # registration group name
    house: str
    entry: date
    leaving: date | None = None
    uln: str | None = None
    candidate: str | None = None
    uci: str | None = None
    links: list[Link] = field(default_factory=list)
    looked_after: bool = False
    gifted: bool = False
    sen_status: str = "N"
    sen_needs: list[str] = field(default_factory=list)  # ranked need codes
    sen_history: list[tuple[str, date, date | None]] = field(default_factory=list)
    mobile: str | None = None
    school_email: str | None = None
    ability: float = 0.0
    attendance_rate: float = 0.95
    unauthorised_share: float = 0.2
    late_rate: float = 0.03
    conduct: float = 1.0  # relative chance of being sanctioned
    has_photo: bool = True
    groups: list[str] = field(default_factory=list)  # teaching group ids
    tally: Tally = field(default_factory=Tally)

    @property
    def id(self) -> str:
        return f"stu-{self.num:06d}"

    @property
    def on_roll(self) -> bool:
        return self.leaving is None


@dataclass(slots=True)
class Staff:
    num: int
    title: str
    forename: str
    surname: str
    gender: str
    dob: date
    address: Address
    start: date
    roles: list[str]
    department: str | None = None  # room prefix of the department, teachers only
    room: str | None = None
    email: str = ""
    phone: str = ""
    code: str = ""
    teaching_cap: int = 0  # periods a week this person may teach
    busy: set[str] = field(default_factory=set)  # period keys taught
    groups: list[str] = field(default_factory=list)
    has_photo: bool = True

    @property
    def id(self) -> str:
        return f"stf-{self.num:05d}"


@dataclass(slots=True)
class Group:
    id: str
    name: str
    group_type: str
    year: int | None
    subject: str | None = None
    code: str | None = None  # subject code of a teaching group
    block: str | None = None  # option block letter of an options group
    periods: tuple[str, ...] = ()  # timetable period keys, "Mon:1"
    staff: list[str] = field(default_factory=list)
    members: set[int] = field(default_factory=set)  # pupil numbers


@dataclass(frozen=True, slots=True)
class Lesson:
    id: str
    period: str
    start: str
    end: str
    group_id: str
    subject: str
    room: str | None
    staff_id: str | None


@dataclass(frozen=True, slots=True)
class Mark:
    pupil: int
    day: date
    session: str
    mark: str
    minutes_late: int | None


@dataclass(frozen=True, slots=True)
class BehaviourEvent:
    id: str
    pupil: int
    kind: str
    day: date
    description: str
    outcome: str | None
    recorded_by: str | None
    points: int


@dataclass(slots=True)
class SchoolInfo:
    name: str
    dfe_number: str
    la_code: int
    establishment: int
    urn: str
    centre: str | None
    region: Region
    local_authority: str | None
    address: Address
    telephone: str
    domain: str
    data_controller: str
    feeder_schools: tuple[tuple[int, int], ...]  # (LA code, establishment) of feeders


@dataclass(slots=True)
class World:
    """Everything the synthetic MIS holds, plus the counters that keep new ids fresh."""

    seed: int
    phase: str
    day: date
    year_start: int  # academic year the school is in
    marks_days: int  # how many recent school days of registers the MIS exposes
    school: SchoolInfo
    years: tuple[int, ...]
    ethnic_weights: tuple[float, ...]  # cumulative, over tables.ETHNICITIES
    forms: dict[int, list[str]] = field(default_factory=dict)
    houses: list[str] = field(default_factory=list)
    pupils: dict[int, Pupil] = field(default_factory=dict)
    families: list[Family] = field(default_factory=list)
    staff: list[Staff] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)
    lessons: list[Lesson] = field(default_factory=list)
    marks: dict[date, list[Mark]] = field(default_factory=dict)
    behaviour: list[BehaviourEvent] = field(default_factory=list)
    used_upns: set[str] = field(default_factory=set)
    next_contact: int = 1
    next_admission: int = 1
    next_candidate: int = 1
    next_behaviour: int = 1

    @property
    def next_pupil(self) -> int:
        return len(self.pupils) + 1

    def on_roll(self) -> list[Pupil]:
        return [p for p in self.pupils.values() if p.leaving is None]
