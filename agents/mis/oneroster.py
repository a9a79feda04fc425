"""The `oneroster` MIS adapter: a OneRoster 1.1 CSV bundle, mapped onto the catalogue.

Files read: orgs.csv and users.csv (required); classes.csv, enrollments.csv,
demographics.csv and academicSessions.csv (optional: the areas that need them are then
unavailable or thinner); manifest.csv if present (only bulk files are supported; versions
1.0 and 1.1, `1.1.0` too).  File names and manifest values are matched without case.
Each file is read when an area first needs it, so a fault in one file (a bad header, a bad
row, a users.csv with only its header) fails only the areas built from it.

Mapping decisions:
- school.details: the first org of type `school`; a 7-digit identifier is the DfE number,
  a 6-digit one the URN.
- students.basic: users with role `student`; `identifier` (or a `{UPN:...}` user id) is the
  UPN when its check letter is right, otherwise the admission number; grades "07" become
  "Year 7", "R"/"KG"/"00" "Reception"; birth date and sex (male/female -> M/F) come from
  demographics; the registration group is the student's homeroom class.
- staff.basic: roles teacher, administrator and aide; groups are the classes they teach.
- contacts: roles parent, guardian and relative, linked to pupils through agentSourcedIds
  in either direction; priority is the contact's position in the pupil's agent list.
- groups: classes (homeroom -> registration, scheduled -> teaching) with their active
  enrollments, plus one year group per grade found among the pupils.
- students.demographics: OneRoster's race flags are US categories with no DfE code, so
  only the ethnicity description is filled; every other field is null.
Users or enrollments with status `tobedeleted`, and disabled users, are left out.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Final

from agents.mis.base import AdapterError, Record
from agents.mis.identifiers import is_valid_upn
from consent.areas import CATALOGUE

STAFF_ROLES: Final = frozenset({"teacher", "administrator", "aide"})
CONTACT_ROLES: Final = frozenset({"parent", "guardian", "relative"})
_USER_ID: Final = re.compile(r"\{\s*([^:{}]+?)\s*:\s*([^{}]+?)\s*\}")
_RACES: Final = (
    ("americanIndianOrAlaskaNative", "American Indian or Alaska Native"),
    ("asian", "Asian"),
    ("blackOrAfricanAmerican", "Black or African American"),
    ("nativeHawaiianOrOtherPacificIslander", "Native Hawaiian or Other Pacific Islander"),
    ("white", "White"),
)
_GRADE_NAMES: Final = {"R": "Reception", "KG": "Reception", "00": "Reception", "0": "Reception"}
_NURSERY: Final = frozenset({"PK", "N", "N1", "N2", "PR"})

Row = dict[str, str]


class Bundle:
    """The bundle's files, each read the first time an area needs it.

    Lazy on purpose: a fault in one file (a bad header, a bad row, no rows at all) fails
    only the areas built from that file; `school.details` needs nothing but orgs.csv.
    """

    def __init__(self, rows: Callable[[str, bool], list[Row]]) -> None:
        self._rows = rows

    @cached_property
    def orgs(self) -> list[Row]:
        return self._rows("orgs.csv", True)

    @cached_property
    def users(self) -> list[Row]:
        rows = self._rows("users.csv", True)
        if not rows:
            # A header-only export is a failed export, not a school whose people all left.
            raise AdapterError("users.csv holds no users (only a header): export it again")
        return [u for u in rows if _live_user(u)]

    @cached_property
    def classes(self) -> list[Row]:
        return [c for c in self._rows("classes.csv", False) if _live(c)]

    @cached_property
    def enrollments(self) -> list[Row]:
        return [e for e in self._rows("enrollments.csv", False) if _live(e)]

    @cached_property
    def demographics(self) -> dict[str, Row]:
        return {d["sourcedId"]: d for d in self._rows("demographics.csv", False)}

    @cached_property
    def sessions(self) -> dict[str, Row]:
        return {s["sourcedId"]: s for s in self._rows("academicSessions.csv", False)}


class OneRosterMis:
    """`MisAdapter` over a OneRoster 1.1 CSV bundle in a folder."""

    name: str

    def __init__(self, directory: Path) -> None:
        self.name = "oneroster"
        self.directory = directory

    def areas(self) -> frozenset[str]:
        present = set(self._files())
        if not {"orgs.csv", "users.csv"} <= present:
            return frozenset()
        out = {"school.details", "students.basic", "staff.basic", "contacts", "groups"}
        if "demographics.csv" in present:
            out.add("students.demographics")
        return frozenset(out)

    def extract(self, area: str) -> Iterator[Record]:
        builder = _BUILDERS.get(area)
        if builder is None or area not in self.areas():
            known = "is not in the catalogue" if area not in CATALOGUE else "is not provided"
            raise AdapterError(f"area {area!r} {known} by this OneRoster bundle")
        return iter(builder(self._bundle()))

    def _bundle(self) -> Bundle:
        self._check_manifest()
        return Bundle(lambda name, required: self._rows(name, required=required))

    def _files(self) -> dict[str, Path]:
        """CSV files by lower-case name: exporters write `Classes.csv` as well as `classes.csv`."""
        return {p.name.lower(): p for p in sorted(self.directory.iterdir()) if p.is_file()}

    def _check_manifest(self) -> None:
        # Exporters differ in case ("file.users,Delta", "OneRoster.Version"): compare lower.
        manifest = {
            r.get("propertyName", "").strip().lower(): r.get("value", "").strip().lower()
            for r in self._rows("manifest.csv")
        }
        version = manifest.get("oneroster.version")
        if version and not re.fullmatch(r"1\.[01](\.0)*", version):
            raise AdapterError(f"manifest.csv: OneRoster {version} is not supported (1.1 is)")
        deltas = sorted(k for k, v in manifest.items() if k.startswith("file.") and v == "delta")
        if deltas:
            raise AdapterError(f"manifest.csv: {deltas[0]} is a delta file; export bulk files")

    def _rows(self, name: str, *, required: bool = False) -> list[Row]:
        path = self._files().get(name.lower())
        if path is None:
            if required:
                raise AdapterError(f"OneRoster bundle: {name} is missing")
            return []
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle)
                rows = []
                for row in reader:
                    if None in row:
                        raise AdapterError(f"{name}:{reader.line_num}: more values than columns")
                    rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
        except UnicodeDecodeError:
            raise AdapterError(f"{name}: not UTF-8 text") from None
        except csv.Error as exc:
            raise AdapterError(f"{name}: malformed CSV: {exc}") from None
        if rows and "sourcedId" not in rows[0] and name != "manifest.csv":
            raise AdapterError(f"{name}: no sourcedId column")
        return rows


def _live(row: Row) -> bool:
    return row.get("status", "").lower() != "tobedeleted"


def _live_user(row: Row) -> bool:
    return _live(row) and row.get("enabledUser", "true").lower() not in ("false", "0", "no")


def _role(row: Row) -> str:
    return row.get("role", "").lower()


def _none(text: str | None) -> str | None:
    return text or None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def year_group(grades: str) -> str | None:
    """OneRoster grade codes as English year groups: "07" -> "Year 7", "R" -> "Reception"."""
    first = next(iter(_split(grades)), "")
    code = first.upper()
    if not code:
        return None
    if code in _GRADE_NAMES:
        return _GRADE_NAMES[code]
    if code in _NURSERY:
        return "Nursery"
    if code.isdigit() and 1 <= int(code) <= 14:
        return f"Year {int(code)}"
    return first


def user_ids(row: Row) -> dict[str, str]:
    """`{type:id}` entries of `userIds`, by lower-case type."""
    return {k.strip().lower(): v.strip() for k, v in _USER_ID.findall(row.get("userIds", ""))}


def school_details(bundle: Bundle) -> list[Record]:
    schools = [o for o in bundle.orgs if o.get("type", "").lower() == "school" and _live(o)]
    if not schools:
        raise AdapterError("orgs.csv: no org of type school")
    org = schools[0]
    identifier = org.get("identifier", "")
    return [
        {
            "id": org["sourcedId"],
            "name": _none(org.get("name")),
            "dfe_number": identifier if re.fullmatch(r"\d{7}", identifier) else None,
            "urn": identifier if re.fullmatch(r"\d{6}", identifier) else None,
        }
    ]


def students_basic(bundle: Bundle) -> list[Record]:
    homeroom = _homeroom_of(bundle)
    out = []
    for user in bundle.users:
        if _role(user) != "student":
            continue
        ids = user_ids(user)
        upn = next(
            (c for c in (ids.get("upn"), user.get("identifier")) if c and is_valid_upn(c)), None
        )
        identifier = _none(user.get("identifier"))
        demo = bundle.demographics.get(user["sourcedId"], {})
        out.append(
            {
                "id": user["sourcedId"],
                "upn": upn,
                "admission_number": ids.get("admissionnumber")
                or (identifier if identifier != upn else None),
                "forename": _none(user.get("givenName")),
                "surname": _none(user.get("familyName")),
                "middle_name": _none(user.get("middleName")),
                "date_of_birth": _none(demo.get("birthDate")),
                "gender": {"male": "M", "female": "F"}.get(demo.get("sex", "").lower()),
                "year_group": year_group(user.get("grades", "")),
                "registration_group": homeroom.get(user["sourcedId"]),
                "on_roll": True,
                "uln": _none(ids.get("uln")),
            }
        )
    return out


def _homeroom_of(bundle: Bundle) -> dict[str, str]:
    titles = {
        c["sourcedId"]: c.get("title") or c.get("classCode") or c["sourcedId"]
        for c in bundle.classes
        if c.get("classType", "").lower() == "homeroom"
    }
    return {
        e["userSourcedId"]: titles[e["classSourcedId"]]
        for e in bundle.enrollments
        if e.get("classSourcedId") in titles and _role(e) == "student"
    }


def staff_basic(bundle: Bundle) -> list[Record]:
    teaches: dict[str, list[str]] = defaultdict(list)
    for enrollment in bundle.enrollments:
        if _role(enrollment) in STAFF_ROLES:
            teaches[enrollment["userSourcedId"]].append(enrollment["classSourcedId"])
    return [
        {
            "id": user["sourcedId"],
            "forename": _none(user.get("givenName")),
            "surname": _none(user.get("familyName")),
            "staff_code": _none(user.get("identifier")),
            "roles": [_role(user).capitalize()],
            "work_email": _none(user.get("email")),
            "work_phone": _none(user.get("phone")),
            "group_ids": sorted(set(teaches.get(user["sourcedId"], []))),
        }
        for user in bundle.users
        if _role(user) in STAFF_ROLES
    ]


def contacts(bundle: Bundle) -> list[Record]:
    students = {u["sourcedId"]: u for u in bundle.users if _role(u) == "student"}
    linked: dict[str, dict[str, int | None]] = defaultdict(dict)
    for student_id, student in students.items():
        for position, agent in enumerate(_split(student.get("agentSourcedIds", "")), start=1):
            linked[agent][student_id] = position
    out = []
    for user in bundle.users:
        if _role(user) not in CONTACT_ROLES:
            continue
        links = linked[user["sourcedId"]]
        for student_id in _split(user.get("agentSourcedIds", "")):
            if student_id in students:
                links.setdefault(student_id, None)
        out.append(_contact(user, links))
    return out


def _contact(user: Row, links: Mapping[str, int | None]) -> Record:
    relationship = _role(user).capitalize()
    responsible = True if _role(user) in ("parent", "guardian") else None
    student_links = [
        {
            "student_id": student_id,
            "relationship": relationship,
            "priority": priority,
            "parental_responsibility": responsible,
        }
        for student_id, priority in sorted(links.items())
    ]
    phones = [
        {"type": kind, "number": user[column], "primary": not index}
        for index, (column, kind) in enumerate(
            (c, k) for c, k in (("phone", "home"), ("sms", "mobile")) if user.get(c)
        )
    ]
    email = user.get("email")
    return {
        "id": user["sourcedId"],
        "forename": _none(user.get("givenName")),
        "surname": _none(user.get("familyName")),
        "relationship": relationship,
        "priority": student_links[0]["priority"] if student_links else None,
        "parental_responsibility": responsible,
        "phones": phones,
        "emails": [{"type": "home", "address": email, "primary": True}] if email else [],
        "student_ids": [link["student_id"] for link in student_links],
        "student_links": student_links,
    }


def groups(bundle: Bundle) -> list[Record]:
    members: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for enrollment in bundle.enrollments:
        role = _role(enrollment)
        if role == "student" or role in STAFF_ROLES:
            kind = "student_ids" if role == "student" else "staff_ids"
            members[enrollment["classSourcedId"]][kind].append(enrollment["userSourcedId"])
    out = [_class_group(c, members[c["sourcedId"]], bundle.sessions) for c in bundle.classes]
    return out + _year_groups(bundle)


def _class_group(row: Row, members: Mapping[str, list[str]], sessions: Mapping[str, Row]) -> Record:
    terms = [sessions[t] for t in _split(row.get("termSourcedIds", "")) if t in sessions]
    homeroom = row.get("classType", "").lower() == "homeroom"
    return {
        "id": row["sourcedId"],
        "name": row.get("title") or row.get("classCode") or row["sourcedId"],
        "group_type": "registration" if homeroom else "teaching",
        "year_group": year_group(row.get("grades", "")),
        "subject": None if homeroom else next(iter(_split(row.get("subjects", ""))), None),
        "staff_ids": sorted(set(members.get("staff_ids", []))),
        "student_ids": sorted(set(members.get("student_ids", []))),
        "start_date": min((t["startDate"] for t in terms if t.get("startDate")), default=None),
        "end_date": max((t["endDate"] for t in terms if t.get("endDate")), default=None),
    }


def _year_groups(bundle: Bundle) -> list[Record]:
    years: dict[str, list[str]] = defaultdict(list)
    for user in bundle.users:
        name = year_group(user.get("grades", "")) if _role(user) == "student" else None
        if name:
            years[name].append(user["sourcedId"])
    return [
        {
            "id": "year-" + re.sub(r"[^a-z0-9]+", "-", name.lower().removeprefix("year ")),
            "name": name,
            "group_type": "year",
            "year_group": name,
            "student_ids": sorted(ids),
        }
        for name, ids in sorted(years.items())
    ]


def students_demographics(bundle: Bundle) -> list[Record]:
    students = {u["sourcedId"] for u in bundle.users if _role(u) == "student"}
    return [
        {"id": student_id, "ethnicity": _ethnicity(row)}
        for student_id, row in bundle.demographics.items()
        if student_id in students
    ]


def _ethnicity(row: Row) -> str | None:
    if row.get("demographicRaceTwoOrMoreRaces", "").lower() == "true":
        return "Two or more races"
    named = [label for column, label in _RACES if row.get(column, "").lower() == "true"]
    return named[0] if len(named) == 1 else ("Two or more races" if named else None)


_BUILDERS: Final[Mapping[str, Callable[[Bundle], list[Record]]]] = {
    "school.details": school_details,
    "students.basic": students_basic,
    "staff.basic": staff_basic,
    "contacts": contacts,
    "groups": groups,
    "students.demographics": students_demographics,
}
