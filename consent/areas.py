"""The data-area catalogue: the one source of truth for what the broker holds.

Every field the broker holds belongs to exactly one area.  Ingest validation, the consent
engine, the cache (validity, core flag), the agent's adapters and `misbroker areas` all read
this module, so adding a field here is the whole change needed to carry it end to end.

Pure: no I/O, no imports from the rest of the project.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, TypeAlias


class FieldType(StrEnum):
    STRING = "string"
    DATE = "date"  # ISO YYYY-MM-DD
    INSTANT = "instant"  # RFC 3339 with offset
    TIME = "time"  # HH:MM, wall clock at the school
    BOOLEAN = "boolean"
    INTEGER = "integer"
    NUMBER = "number"
    BINARY = "binary"  # base64 in uploads and responses
    STRING_LIST = "string_list"
    OBJECT_LIST = "object_list"  # list of flat objects described by `item_fields`


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    description: str
    choices: tuple[str, ...] | None = None
    item_fields: tuple[FieldSpec, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type.value,
            "description": self.description,
            "nullable": True,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.item_fields:
            out["item_fields"] = [f.as_dict() for f in self.item_fields]
        return out


@dataclass(frozen=True, slots=True)
class Area:
    name: str
    holds: str
    validity: timedelta
    core: bool
    sensitive: bool
    fields: tuple[FieldSpec, ...]
    binary: bool = False  # holds large binaries (photos): lives in the cold tier
    # A partner with a read_write consent may send records of this area for the school's
    # agent to apply to the MIS (write-back).
    writable: bool = False
    field_index: Mapping[str, FieldSpec] = field(init=False, repr=False, compare=False)
    # Each field's check, built on first use (`validate_record`).
    field_checks: Mapping[str, Check] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __hash__(self) -> int:
        # Areas key caches (`functools.cache`) asked per record and per read; the generated
        # hash walked every field spec each time.  Equal areas have equal names.
        return hash(self.name)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names) or "id" in names:
            raise ValueError(f"area {self.name}: duplicate or reserved field name")
        object.__setattr__(self, "field_index", {f.name: f for f in self.fields})

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.field_index)

    def as_dict(self) -> dict[str, Any]:
        return {
            "area": self.name,
            "holds": self.holds,
            "validity_seconds": int(self.validity.total_seconds()),
            "core": self.core,
            "sensitive": self.sensitive,
            "writable": self.writable,
            "fields": [f.as_dict() for f in self.fields],
        }


DAY: Final = timedelta(days=1)
WEEK: Final = timedelta(days=7)

S, D, T = FieldType.STRING, FieldType.DATE, FieldType.TIME
B, INT, NUM = FieldType.BOOLEAN, FieldType.INTEGER, FieldType.NUMBER
BIN, SL, OL = FieldType.BINARY, FieldType.STRING_LIST, FieldType.OBJECT_LIST


def _f(name: str, type_: FieldType, description: str, **kw: Any) -> FieldSpec:
    return FieldSpec(name, type_, description, **kw)


GENDERS: Final = ("M", "F", "X", "U")
SESSIONS: Final = ("AM", "PM")
GROUP_TYPES: Final = ("year", "registration", "house", "teaching")

PHONES = _f(
    "phones",
    OL,
    "Telephone numbers",
    item_fields=(
        _f("type", S, "home, mobile, work", choices=("home", "mobile", "work", "other")),
        _f("number", S, "As held by the MIS"),
        _f("primary", B, "Preferred number"),
    ),
)
EMAILS = _f(
    "emails",
    OL,
    "Email addresses",
    item_fields=(
        _f("type", S, "home, work", choices=("home", "work", "other")),
        _f("address", S, "Email address"),
        _f("primary", B, "Preferred address"),
    ),
)
ADDRESS_PARTS: Final = (
    _f("address_block", S, "Whole postal address, lines separated by newlines"),
    _f("address_line1", S, "House name or number and street"),
    _f("address_line2", S, "Locality"),
    _f("address_line3", S, "Further locality"),
    _f("town", S, "Post town"),
    _f("county", S, "County"),
    _f("postcode", S, "UK postcode"),
    _f("country", S, "Country"),
)

AREAS: Final[tuple[Area, ...]] = (
    Area(
        "school.details",
        "The school itself: identifiers, address, contacts, data controller",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("name", S, "Establishment name"),
            _f("dfe_number", S, "LA code + establishment number, e.g. 3024012"),
            _f("urn", S, "Unique Reference Number"),
            _f("exam_centre_number", S, "JCQ centre number"),
            _f("local_authority", S, "Local authority name"),
            _f("address", S, "Postal address block"),
            _f("postcode", S, "UK postcode"),
            _f("country", S, "England, Wales, Scotland, Northern Ireland"),
            _f("telephone", S, "Main telephone"),
            _f("email", S, "Main email"),
            _f("headteacher", S, "Headteacher's name"),
            _f("data_controller", S, "The legal data controller (school or trust)"),
        ),
    ),
    Area(
        "groups",
        "Year, registration, house and teaching groups with their memberships",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("name", S, "Group name as the MIS has it, e.g. 8B, Year 8, 10x/Ma1"),
            _f("group_type", S, "Kind of group", choices=GROUP_TYPES),
            _f("year_group", S, "Year group the group belongs to, e.g. Year 8"),
            _f("subject", S, "Subject of a teaching group"),
            _f("staff_ids", SL, "Tutors or teachers of the group"),
            _f("student_ids", SL, "Current members"),
            _f("start_date", D, "Group start"),
            _f("end_date", D, "Group end"),
        ),
    ),
    Area(
        "timetable",
        "Lessons: periods, rooms, teachers and the group taught",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("period", S, "Period name, e.g. Mon:1"),
            _f("day_of_week", S, "Monday..Sunday"),
            _f("week", S, "Timetable cycle week, e.g. A or B"),
            _f("start_time", T, "Lesson start, HH:MM"),
            _f("end_time", T, "Lesson end, HH:MM"),
            _f("group_id", S, "Teaching group taught"),
            _f("subject", S, "Subject"),
            _f("room", S, "Room code"),
            _f("staff_ids", SL, "Teachers"),
        ),
    ),
    Area(
        "students.basic",
        "Pupils on and off roll: identifiers, names, dates, groups",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("upn", S, "Unique Pupil Number (13 characters, DfE check letter first)"),
            _f("admission_number", S, "School admission number"),
            _f("forename", S, "Forename"),
            _f("surname", S, "Surname"),
            _f("legal_forename", S, "Legal forename"),
            _f("legal_surname", S, "Legal surname"),
            _f("middle_name", S, "Middle names"),
            _f("preferred_name", S, "Preferred forename"),
            _f("date_of_birth", D, "Date of birth"),
            _f("gender", S, "Gender as the MIS has it", choices=GENDERS),
            _f("year_group", S, "e.g. Year 8"),
            _f("registration_group", S, "e.g. 8B"),
            _f("house", S, "House"),
            _f("on_roll", B, "Currently on roll"),
            _f("entry_date", D, "Date of entry"),
            _f("leaving_date", D, "Date of leaving"),
            _f("uln", S, "Unique Learner Number"),
            _f("exam_number", S, "Exam candidate number"),
        ),
    ),
    Area(
        "students.contact_details",
        "Pupils' home address, telephone numbers and emails",
        DAY,
        core=True,
        sensitive=False,
        fields=(*ADDRESS_PARTS, PHONES, EMAILS),
    ),
    Area(
        "students.demographics",
        "Ethnicity, religion, language and eligibility flags (FSM, pupil premium, ...)",
        DAY,
        core=True,
        sensitive=True,
        fields=(
            _f("ethnicity", S, "Ethnicity description"),
            _f("ethnicity_code", S, "DfE ethnicity code, e.g. WBRI"),
            _f("religion", S, "Religion description"),
            _f("religion_code", S, "Religion code"),
            _f("first_language", S, "First language description"),
            _f("first_language_code", S, "DfE language code, e.g. ENG"),
            _f("eal", B, "English as an additional language"),
            _f("fsm_eligible", B, "Eligible for free school meals"),
            _f("fsm_end_date", D, "End of the current FSM eligibility"),
            _f("ufsm", B, "Universal infant free school meals"),
            _f("fsm6", B, "FSM at any point in the last six years"),
            _f("pupil_premium", B, "Attracts pupil premium"),
            _f("looked_after", B, "Child looked after"),
            _f("service_child", B, "Child of service personnel"),
            _f("gifted", B, "Gifted and talented"),
            _f("traveller", B, "Traveller"),
        ),
    ),
    Area(
        "students.sen",
        "Special educational needs status, provision history and need types",
        DAY,
        core=False,
        sensitive=True,
        fields=(
            _f("sen_status", S, "N none, K SEN support, E EHC plan", choices=("N", "K", "E")),
            _f(
                "sen_provisions",
                OL,
                "Provision history",
                item_fields=(
                    _f("status", S, "Provision status"),
                    _f("start_date", D, "Start"),
                    _f("end_date", D, "End"),
                ),
            ),
            _f(
                "sen_needs",
                OL,
                "Types of need, ranked",
                item_fields=(
                    _f("type", S, "DfE need type code, e.g. SEMH"),
                    _f("description", S, "Need description"),
                    _f("ranking", INT, "1 is primary need"),
                ),
            ),
        ),
    ),
    Area(
        "students.attendance_summary",
        "Attendance totals and percentages for the academic year to date",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("period_start", D, "First day counted"),
            _f("period_end", D, "Last day counted"),
            _f("possible_marks", INT, "Possible sessions"),
            _f("present_marks", INT, "Present sessions"),
            _f("aea_marks", INT, "Approved educational activity"),
            _f("authorised_absence_marks", INT, "Authorised absences"),
            _f("unauthorised_absence_marks", INT, "Unauthorised absences"),
            _f("missing_marks", INT, "Sessions with no mark"),
            _f("late_marks", INT, "Late sessions"),
            _f("attendance_percent", NUM, "Present + AEA as % of possible"),
            _f("authorised_absence_percent", NUM, "% of possible"),
            _f("unauthorised_absence_percent", NUM, "% of possible"),
        ),
    ),
    Area(
        "students.photos",
        "Pupil photographs",
        WEEK,
        core=True,
        sensitive=False,
        binary=True,
        fields=(
            _f("photo", BIN, "JPEG photograph, base64"),
            _f("photo_available", B, "The MIS holds a photo"),
        ),
    ),
    Area(
        "contacts",
        "Parents, carers and other contacts, linked to pupils with priority and PR",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("title", S, "Title"),
            _f("forename", S, "Forename"),
            _f("surname", S, "Surname"),
            _f("relationship", S, "Relationship to the first linked pupil, e.g. Mother"),
            _f("priority", INT, "Contact priority for the first linked pupil (1 first)"),
            _f("parental_responsibility", B, "Holds parental responsibility"),
            *ADDRESS_PARTS,
            PHONES,
            EMAILS,
            _f("student_ids", SL, "Linked pupils"),
            _f(
                "student_links",
                OL,
                "Per-pupil link: siblings can rank the same contact differently",
                item_fields=(
                    _f("student_id", S, "Pupil"),
                    _f("relationship", S, "Relationship to this pupil"),
                    _f("priority", INT, "Priority for this pupil (1 first)"),
                    _f("parental_responsibility", B, "Holds PR for this pupil"),
                ),
            ),
        ),
    ),
    Area(
        "staff.basic",
        "Staff names, roles, work contact details and groups",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("title", S, "Title"),
            _f("forename", S, "Forename"),
            _f("surname", S, "Surname"),
            _f("legal_forename", S, "Legal forename"),
            _f("legal_surname", S, "Legal surname"),
            _f("staff_code", S, "Initials or code used on the timetable"),
            _f("roles", SL, "Roles, e.g. Teacher, Head of Year"),
            _f("work_email", S, "Work email"),
            _f("work_phone", S, "Work telephone"),
            _f("group_ids", SL, "Groups taught or tutored"),
            _f("middle_name", S, "Middle name(s)"),
            _f("mobile_phone", S, "Mobile telephone (for text messages)"),
        ),
    ),
    Area(
        "staff.personal",
        "Staff personal details: date of birth, gender, home address, employment dates",
        DAY,
        core=True,
        sensitive=True,
        fields=(
            _f("date_of_birth", D, "Date of birth"),
            _f("gender", S, "Gender", choices=GENDERS),
            *ADDRESS_PARTS,
            _f("employment_start", D, "Start of employment"),
            _f("employment_end", D, "End of employment"),
        ),
    ),
    Area(
        "staff.photos",
        "Staff photographs",
        WEEK,
        core=True,
        sensitive=False,
        binary=True,
        fields=(_f("photo", BIN, "JPEG photograph, base64"),),
    ),
    Area(
        "attendance.codes",
        "The attendance register codes in use (DfE codes plus school codes)",
        DAY,
        core=True,
        sensitive=False,
        fields=(
            _f("mark", S, "Register mark, e.g. / \\ L M"),
            _f("description", S, "What the code means"),
            _f(
                "meaning",
                S,
                "Statistical meaning",
                choices=(
                    "present",
                    "aea",
                    "authorised_absence",
                    "unauthorised_absence",
                    "not_required",
                    "no_mark",
                ),
            ),
            _f(
                "physical_meaning",
                S,
                "Where the pupil physically is",
                choices=(
                    "in_school",
                    "out_of_school",
                ),
            ),
        ),
    ),
    Area(
        "attendance.marks",
        "Session attendance marks (AM/PM) per pupil per day",
        DAY,
        core=False,
        sensitive=False,
        fields=(
            _f("student_id", S, "Pupil"),
            _f("date", D, "School day"),
            _f("session", S, "AM or PM", choices=SESSIONS),
            _f("mark", S, "Register mark, see attendance.codes"),
            _f("minutes_late", INT, "Minutes late, where recorded"),
        ),
        writable=True,
    ),
    Area(
        "behaviour",
        "Behaviour and achievement events",
        DAY,
        core=False,
        sensitive=True,
        fields=(
            _f("student_id", S, "Pupil"),
            _f("type", S, "Event type, e.g. Disruption, Merit"),
            _f("date", D, "Date of the event"),
            _f("description", S, "What happened"),
            _f("outcome", S, "Action taken"),
            _f("recorded_by", S, "Staff id of the recorder"),
            _f("points", INT, "Points; negative for sanctions"),
        ),
        writable=True,
    ),
    Area(
        "exams",
        "Exam candidates and their entries",
        DAY,
        core=False,
        sensitive=False,
        fields=(
            _f("student_id", S, "Pupil"),
            _f("candidate_number", S, "Four-digit candidate number"),
            _f("uci", S, "Unique Candidate Identifier"),
            _f(
                "entries",
                OL,
                "Exam entries",
                item_fields=(
                    _f("series", S, "e.g. June 2026"),
                    _f("awarding_body", S, "e.g. AQA"),
                    _f("qualification", S, "e.g. GCSE"),
                    _f("subject", S, "Subject"),
                    _f("entry_code", S, "Option entry code"),
                ),
            ),
        ),
    ),
)

CATALOGUE: Final[Mapping[str, Area]] = {a.name: a for a in AREAS}
CORE_AREAS: Final[frozenset[str]] = frozenset(a.name for a in AREAS if a.core)
SENSITIVE_AREAS: Final[frozenset[str]] = frozenset(a.name for a in AREAS if a.sensitive)
WRITABLE_AREAS: Final[frozenset[str]] = frozenset(a.name for a in AREAS if a.writable)


class UnknownAreaError(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown data area {self.name!r}"


def get_area(name: str) -> Area:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownAreaError(name) from None


def parse_area_list(text: str) -> tuple[str, ...]:
    """Parse "a,b , c" into known area names, keeping order and dropping repeats."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        get_area(name)
    return tuple(dict.fromkeys(names))


def catalogue_as_dict() -> dict[str, Any]:
    return {"areas": [a.as_dict() for a in AREAS]}


# ---------------------------------------------------------------------------------------
# Validation of incoming records.  Kept here so the agent (before it sends) and the broker
# (before it accepts) apply exactly the same rules.

MAX_STRING_LENGTH: Final = 10_000
MAX_BINARY_BYTES: Final = 5 * 1024 * 1024
MAX_LIST_ITEMS: Final = 10_000
MAX_ID_LENGTH: Final = 128
RECORD_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/\-]{0,127}$"
TIME_PATTERN: Final = r"^([01]\d|2[0-3]):[0-5]\d$"
_ID_RE: Final = re.compile(RECORD_ID_PATTERN)
_TIME_RE: Final = re.compile(TIME_PATTERN)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in one record, precise enough for an agent to find and fix it."""

    index: int
    record_id: str | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "record_id": self.record_id,
            "field": self.field,
            "message": self.message,
        }


def is_valid_record_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None


Check: TypeAlias = Callable[[Any], "str | None"]


@functools.cache
def field_check(spec: FieldSpec) -> Check:
    """`_check_value` for one field, with the common valid values settled by a type test
    first: every upload record passes here on the agent and again on the broker, and the
    general check cost 7-20 us a record.  Anything the quick test does not pass gets the
    general check, so what is refused, and the message, are unchanged."""
    general = functools.partial(_check_value, spec)
    kind = spec.type
    quick: type | None = {
        FieldType.STRING: str,
        FieldType.BOOLEAN: bool,
        FieldType.INTEGER: int,
    }.get(kind)
    if quick is str and spec.choices is not None:
        choices = frozenset(spec.choices)

        def check_choice(value: Any) -> str | None:
            if value is None or (value.__class__ is str and value in choices):
                return None
            return general(value)

        return check_choice
    if quick is str:

        def check_string(value: Any) -> str | None:
            if value is None or (value.__class__ is str and len(value) <= MAX_STRING_LENGTH):
                return None
            return general(value)

        return check_string
    if quick is not None:
        exact = quick  # `bool` is an `int` subclass: the class itself, not isinstance

        def check_exact(value: Any) -> str | None:
            return None if value is None or value.__class__ is exact else general(value)

        return check_exact
    if kind is FieldType.OBJECT_LIST:
        items = {item.name: field_check(item) for item in spec.item_fields}

        def check_objects(value: Any) -> str | None:
            if value is None:
                return None
            if value.__class__ is not list or len(value) > MAX_LIST_ITEMS:
                return general(value)
            for item in value:
                if item.__class__ is not dict:
                    return general(value)
                for key, inner in item.items():
                    check = items.get(key)
                    if check is None or check(inner) is not None:
                        return general(value)
            return None

        return check_objects
    quicker = _QUICK_CHECKS.get(kind)
    if quicker is not None:
        passes = quicker

        def check_quick(value: Any) -> str | None:
            return None if value is None or passes(value) else general(value)

        return check_quick
    return general


def _date_passes(value: Any) -> bool:
    if value.__class__ is not str or len(value) != 10:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _number_passes(value: Any) -> bool:
    kind = value.__class__
    return kind is int or (kind is float and math.isfinite(value))


def _time_passes(value: Any) -> bool:
    return value.__class__ is str and _TIME_RE.match(value) is not None


def _string_list_passes(value: Any) -> bool:
    if value.__class__ is not list or len(value) > MAX_LIST_ITEMS:
        return False
    for item in value:  # noqa: SIM110 - a loop, not all() over a generator: half the cost
        if item.__class__ is not str or len(item) > MAX_STRING_LENGTH:
            return False
    return True


# Values these pass are valid for their type; what they do not pass gets the general check.
_QUICK_CHECKS: Final[Mapping[FieldType, Callable[[Any], bool]]] = {
    FieldType.DATE: _date_passes,
    FieldType.NUMBER: _number_passes,
    FieldType.TIME: _time_passes,
    FieldType.STRING_LIST: _string_list_passes,
}


def _check_value(spec: FieldSpec, value: Any) -> str | None:
    """Return why `value` does not fit `spec`, or None.  Null is always allowed."""
    if value is None:
        return None
    kind = spec.type
    if kind is FieldType.STRING:
        if not isinstance(value, str):
            return f"expected a string, got {type(value).__name__}"
        if len(value) > MAX_STRING_LENGTH:
            return f"longer than {MAX_STRING_LENGTH} characters"
        if spec.choices is not None and value not in spec.choices:
            return f"expected one of {', '.join(spec.choices)}"
        return None
    if kind is FieldType.BOOLEAN:
        return None if isinstance(value, bool) else "expected true or false"
    if kind is FieldType.INTEGER:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected an integer"
    if kind is FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        return None if math.isfinite(value) else "expected a finite number"
    if kind is FieldType.DATE:
        if not isinstance(value, str) or len(value) != 10:
            return "expected a date YYYY-MM-DD"
        try:
            date.fromisoformat(value)
        except ValueError:
            return "expected a date YYYY-MM-DD"
        return None
    if kind is FieldType.INSTANT:
        return None if parse_instant(value) is not None else "expected an RFC 3339 time"
    if kind is FieldType.TIME:
        ok = isinstance(value, str) and _TIME_RE.match(value) is not None
        return None if ok else "expected a time HH:MM"
    if kind is FieldType.BINARY:
        return _check_base64(value)
    if kind is FieldType.STRING_LIST:
        if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
            return "expected a list of strings"
        ok = all(isinstance(v, str) and len(v) <= MAX_STRING_LENGTH for v in value)
        return None if ok else "expected a list of strings"
    return _check_object_list(spec, value)


def _check_base64(value: Any) -> str | None:
    if not isinstance(value, str):
        return "expected base64 text"
    if len(value) > (MAX_BINARY_BYTES * 4) // 3 + 4:
        return f"larger than {MAX_BINARY_BYTES} bytes"
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "expected base64 text"
    return None


def _check_object_list(spec: FieldSpec, value: Any) -> str | None:
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
        return "expected a list of objects"
    allowed = {f.name: f for f in spec.item_fields}
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            return f"item {position}: expected an object"
        for key, inner in item.items():
            item_spec = allowed.get(key)
            if item_spec is None:
                return f"item {position}: unknown field {key!r}"
            problem = _check_value(item_spec, inner)
            if problem is not None:
                return f"item {position}.{key}: {problem}"
    return None


def record_is_valid(area: Area, record: Any) -> bool:
    """True exactly when `validate_record` would yield nothing: the quick answer for the
    common case, without building a generator for every record of an upload."""
    if record.__class__ is not dict or not is_valid_record_id(record.get("id")):
        return False
    checks = _field_checks(area)
    for key, value in record.items():
        if key != "id":
            check = checks.get(key)
            if check is None or check(value) is not None:
                return False
    return True


def _field_checks(area: Area) -> Mapping[str, Check]:
    checks = area.field_checks
    if checks is None:
        checks = {spec.name: field_check(spec) for spec in area.fields}
        object.__setattr__(area, "field_checks", checks)
    return checks


def validate_record(area: Area, index: int, record: Any) -> Iterator[FieldError]:
    """Yield every problem with one uploaded record of `area`."""
    if not isinstance(record, dict):
        yield FieldError(index, None, "", "expected an object")
        return
    record_id = record.get("id")
    shown_id = record_id if isinstance(record_id, str) else None
    if record_id is None:
        yield FieldError(index, None, "id", "missing id")
    elif not is_valid_record_id(record_id):
        yield FieldError(index, shown_id, "id", "id must be 1-128 of A-Z a-z 0-9 . _ : / -")
    checks = _field_checks(area)
    for key, value in record.items():
        if key == "id":
            continue
        check = checks.get(key)
        if check is None:
            yield FieldError(index, shown_id, key, f"unknown field for area {area.name}")
            continue
        problem = check(value)
        if problem is not None:
            yield FieldError(index, shown_id, key, problem)


def parse_instant(value: Any) -> datetime | None:
    """Parse an RFC 3339 instant; None if it is not one (naive times are refused)."""
    if not isinstance(value, str) or len(value) < 20 or len(value) > 40:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None or "T" not in value.upper():
        return None
    try:
        parsed.astimezone(UTC)  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min
    except OverflowError:
        return None
    return parsed
