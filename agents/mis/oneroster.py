"""The `oneroster` MIS adapter: a OneRoster 1.1 or 1.2 CSV bundle, mapped onto the catalogue.

The input format, the mapping and what is ignored are documented in
`agents/mis/ONEROSTER.md`; the decisions that shape the code:

- A bundle is a folder of CSV files, a folder holding one `.zip`, or a `.zip` file.  File
  names and manifest values are matched without case.
- Each file is read when an area first needs it, so a fault in one file (a bad header,
  bad UTF-8, a users.csv with only its header) fails only the areas built from it.
- A bad row or a bad value is not a bad file: that record is quarantined (left out and
  reported by id, field and kind of problem, never the value) and the rest of the area
  goes on.  `agents.extract` makes sure the broker keeps what it had for that id.
- An export holding several schools is read for one school only (`[mis] school`): its
  users (by their orgs), classes and enrollments (by `schoolSourcedId`).  Without a
  `school`, such an export is refused: another school's pupils must never get in.
- Enrollments count only between live users and live classes, and only with a role that
  matches the user's own (a teacher enrolled as a student is not a pupil).
- A delta bundle is applied to the agent's copy of the export (`oneroster_roster`), which
  is then read like a bulk bundle; its areas are sent as deltas (`AreaRead.from_delta`),
  so an id is deleted only because the export said so, never because it was absent.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from agents.mis.base import AdapterError, AreaRead, Quarantined, Record
from agents.mis.dates import DEFAULT_DATE_FORMAT, DateProblem, month_first_seen, read_date
from agents.mis.identifiers import is_valid_upn
from agents.mis.oneroster_roster import Roster
from consent.areas import CATALOGUE

STAFF_ROLES: Final = frozenset({"teacher", "administrator", "aide"})
CONTACT_ROLES: Final = frozenset({"parent", "guardian", "relative"})
USER_AREAS: Final = {
    "student": ("students.basic", "students.contact_details"),
    "staff": ("staff.basic",),
    "contact": ("contacts",),
}
_USER_ID: Final = re.compile(r"\{\s*([^:{}]+?)\s*:\s*([^{}]+?)\s*\}")
_RACES: Final = (
    ("americanIndianOrAlaskaNative", "American Indian or Alaska Native"),
    ("asian", "Asian"),
    ("blackOrAfricanAmerican", "Black or African American"),
    ("nativeHawaiianOrOtherPacificIslander", "Native Hawaiian or Other Pacific Islander"),
    ("white", "White"),
)


def _default_grades() -> dict[str, str]:
    table = {code: "Nursery" for code in ("PK", "PR", "N", "N1", "N2")}
    table |= {code: "Reception" for code in ("R", "KG", "0", "00")}
    for year in range(1, 15):
        table[str(year)] = table[f"{year:02d}"] = f"Year {year}"
    return table


# OneRoster grade codes (CEDS) to English year groups.  UK exporters write the English year
# number ("07" is Year 7), not the US grade.  Anything else (UG, TK, PS, IT, Other, ...)
# is unknown: the record is quarantined rather than given a year group that is not one.
DEFAULT_GRADES: Final[Mapping[str, str]] = _default_grades()

Row = dict[str, str]


@dataclass(frozen=True, slots=True)
class Options:
    """The adapter's `[mis]` options."""

    school: str | None = None  # DfE number, URN, or the org's sourcedId/identifier
    date_format: str = DEFAULT_DATE_FORMAT
    grades: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_GRADES))

    @classmethod
    def with_grades(cls, school: str | None, date_format: str, extra: Mapping[str, str]) -> Options:
        """The default grade table changed by `[mis.grades]`; an empty name makes a code unknown."""
        grades = dict(DEFAULT_GRADES)
        for code, name in extra.items():
            if name:
                grades[code.strip().upper()] = name
            else:
                grades.pop(code.strip().upper(), None)
        return cls(school, date_format, grades)


@dataclass(frozen=True, slots=True)
class Table:
    """One CSV file: its columns, its good rows, and the rows too broken to read."""

    name: str
    columns: tuple[str, ...]
    rows: list[Row]
    broken: list[Quarantined]


class Source:
    """Where the bundle's files are: a folder of CSV files, a zip in a folder, or a zip file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @cached_property
    def zip_path(self) -> Path | None:
        if self.path.is_file():
            return self.path
        if not self.path.is_dir():
            return None
        files = [p for p in sorted(self.path.iterdir()) if p.is_file()]
        if any(p.suffix.lower() == ".csv" for p in files):
            return None
        zips = [p for p in files if p.suffix.lower() == ".zip"]
        if len(zips) > 1:
            raise AdapterError(f"{self.path}: {len(zips)} zip files and no CSV files; keep one")
        return zips[0] if zips else None

    def files(self) -> dict[str, str]:
        """File names by lower-case name: exporters write `Classes.csv` as well as `classes.csv`."""
        zipped = self.zip_path
        if zipped is None:
            if not self.path.is_dir():
                return {}
            return {p.name.lower(): p.name for p in sorted(self.path.iterdir()) if p.is_file()}
        try:
            with zipfile.ZipFile(zipped) as archive:
                names = [i.filename for i in archive.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise AdapterError(f"{zipped.name}: not a readable zip file: {exc}") from None
        # A bundle zipped with its folder has its files one level down.
        return {n.rsplit("/", 1)[-1].lower(): n for n in sorted(names, reverse=True)}

    def text(self, member: str) -> str:
        zipped = self.zip_path
        try:
            if zipped is None:
                raw = (self.path / member).read_bytes()
            else:
                with zipfile.ZipFile(zipped) as archive:
                    raw = archive.read(member)
        except (zipfile.BadZipFile, OSError) as exc:
            raise AdapterError(f"{member}: cannot be read: {exc}") from None
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise AdapterError(f"{member}: not UTF-8 text") from None

    def describe(self) -> str:
        zipped = self.zip_path
        return f"zip {zipped}" if zipped is not None else f"folder {self.path}"


def read_table(source: Source, name: str, *, required: bool = False) -> Table:
    """One file's rows; a row that cannot be read is `broken`, not a failed file."""
    member = source.files().get(name.lower())
    if member is None:
        if required:
            raise AdapterError(f"OneRoster bundle: {name} is missing")
        return Table(name, (), [], [])
    reader = csv.reader(io.StringIO(source.text(member), newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        if header and "sourcedId" not in header and name.lower() != "manifest.csv":
            raise AdapterError(f"{name}: no sourcedId column")
        rows: list[Row] = []
        broken: list[Quarantined] = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            row = {k: (v or "").strip() for k, v in zip(header, values, strict=False)}
            where = f"{name}:{reader.line_num}"
            record_id = row.get("sourcedId") or None
            if len(values) > len(header):
                broken.append(Quarantined(record_id, "", "more values than columns", where))
            elif record_id is None and name.lower() != "manifest.csv":
                broken.append(Quarantined(None, "sourcedId", "empty sourcedId", where))
            else:
                rows.append(row)
    except csv.Error as exc:
        raise AdapterError(f"{name}: malformed CSV: {exc}") from None
    return Table(name, tuple(header), rows, broken)


class Bundle:
    """The bundle's files, each read the first time an area needs it, for one school.

    Lazy on purpose: a fault in one file fails only the areas built from that file;
    `school.details` needs nothing but orgs.csv.
    """

    def __init__(
        self,
        source: Source,
        options: Options,
        *,
        faults: Mapping[str, str] | None = None,
        delta: bool = False,
    ) -> None:
        self._source = source
        self.options = options
        # Files of a delta bundle that could not be applied: their areas fail, as in bulk.
        self._faults = dict(faults or {})
        self.delta = delta

    def table(self, name: str, *, required: bool = False) -> Table:
        fault = self._faults.get(name.lower())
        if fault is not None:
            raise AdapterError(fault)
        return read_table(self._source, name, required=required)

    # --- the school ----------------------------------------------------------------------

    @cached_property
    def schools(self) -> list[Row]:
        orgs = self.table("orgs.csv", required=True).rows
        found = [o for o in orgs if o.get("type", "").lower() == "school" and _live(o)]
        if not found:
            raise AdapterError("orgs.csv: no org of type school")
        return found

    @cached_property
    def school(self) -> Row:
        """The one school this agent reads: the only one, or the one `[mis] school` names."""
        wanted = self.options.school
        if wanted is None:
            if len(self.schools) > 1:
                found = describe_schools(self.schools)
                raise AdapterError(
                    f"the export holds {len(self.schools)} schools ({found});"
                    " set [mis] school to one of them (DfE number, URN or sourcedId)"
                )
            return self.schools[0]
        matches = [o for o in self.schools if _names_school(o, wanted)]
        if len(matches) != 1:
            raise AdapterError(
                f"[mis] school {wanted!r} matches {len(matches)} of the export's schools"
                f" ({describe_schools(self.schools)})"
            )
        return matches[0]

    @property
    def filtered(self) -> bool:
        """Only an export of several schools is filtered by org (one school: every row is its)."""
        return len(self.schools) > 1

    # --- users ---------------------------------------------------------------------------

    @cached_property
    def _users_table(self) -> Table:
        table = self.table("users.csv", required=True)
        if not table.rows and not table.broken:
            # A header-only export is a failed export, not a school whose people all left.
            raise AdapterError("users.csv holds no users (only a header): export it again")
        return table

    @cached_property
    def roles(self) -> dict[str, list[Row]]:
        """OneRoster 1.2's roles.csv rows by user."""
        out: dict[str, list[Row]] = defaultdict(list)
        for row in self.table("roles.csv").rows:
            if _live(row) and row.get("userSourcedId"):
                out[row["userSourcedId"]].append(row)
        return out

    def _role_of(self, user: Row) -> str:
        """The user's role: 1.1's `role` column, or 1.2's primary role for this school."""
        if "role" in self._users_table.columns:
            return user.get("role", "").lower()
        school = self.school["sourcedId"]
        rows = self.roles.get(user["sourcedId"], [])
        ranked = sorted(
            rows,
            key=lambda r: (
                r.get("orgSourcedId") != school,
                r.get("roleType", "").lower() != "primary",
            ),
        )
        return ranked[0].get("role", "").lower() if ranked else ""

    def _orgs_of(self, user: Row) -> set[str]:
        orgs = set(_split(user.get("orgSourcedIds", "")))
        orgs |= {user["primaryOrgSourcedId"]} if user.get("primaryOrgSourcedId") else set()
        return orgs | {r["orgSourcedId"] for r in self.roles.get(user["sourcedId"], [])}

    @cached_property
    def users(self) -> list[Row]:
        """Live users of this school, each with its resolved `role`."""
        table = self._users_table
        if "role" not in table.columns and not self.table("roles.csv").columns:
            raise AdapterError("users.csv has no role column and the bundle has no roles.csv")
        school = self.school["sourcedId"]
        out = []
        for user in table.rows:
            if not _live_user(user):
                continue
            resolved = {**user, "role": self._role_of(user)}
            if self.filtered and school not in self._orgs_of(user):
                # A contact counts for this school through a pupil of it (see `contacts`).
                if resolved["role"] not in CONTACT_ROLES:
                    continue
                resolved["_other_school"] = "1"
            out.append(resolved)
        return out

    def broken_users(self, kind: str) -> list[Quarantined]:
        """Rows of users.csv too broken to read, for the areas of users of `kind`.

        Their role may be unreadable: then they count for every user area.
        """
        out = []
        for problem in self._users_table.broken:
            role = self._broken_role(problem)
            if role is None or _kind(role) == kind:
                out.append(problem)
        return out

    def _broken_role(self, problem: Quarantined) -> str | None:
        if problem.record_id is None or "role" in self._users_table.columns:
            return None  # the row's own role column cannot be trusted
        role = self._role_of({"sourcedId": problem.record_id})
        return role or None

    def of_kind(self, kind: str) -> list[Row]:
        return [u for u in self.users if _kind(u["role"]) == kind]

    @cached_property
    def students(self) -> dict[str, Row]:
        return {u["sourcedId"]: u for u in self.of_kind("student")}

    # --- classes and enrollments ---------------------------------------------------------

    @cached_property
    def classes_table(self) -> Table:
        return self.table("classes.csv")

    @cached_property
    def classes(self) -> list[Row]:
        school = self.school["sourcedId"] if self.filtered else None
        return [
            c
            for c in self.classes_table.rows
            if _live(c) and (school is None or c.get("schoolSourcedId") == school)
        ]

    @cached_property
    def enrollments(self) -> list[Row]:
        """Live enrollments between live users and classes of this school, roles matching."""
        classes = {c["sourcedId"] for c in self.classes}
        roles = {u["sourcedId"]: u["role"] for u in self.users if "_other_school" not in u}
        out = []
        for row in self.table("enrollments.csv").rows:
            user_role = roles.get(row.get("userSourcedId", ""))
            if not _live(row) or row.get("classSourcedId") not in classes or user_role is None:
                continue
            kind = _kind(row.get("role", "").lower())
            if kind in ("student", "staff") and kind == _kind(user_role):
                out.append(row)
        return out

    # --- demographics and sessions -------------------------------------------------------

    @cached_property
    def demographics_table(self) -> Table:
        return self.table("demographics.csv")

    @cached_property
    def demographics(self) -> dict[str, Row]:
        return {d["sourcedId"]: d for d in self.demographics_table.rows}

    @cached_property
    def broken_demographics(self) -> dict[str, Quarantined]:
        return {q.record_id: q for q in self.demographics_table.broken if q.record_id}

    @cached_property
    def birth_dates_us(self) -> bool:
        """Whether this school's birth dates show US order (another school's do not count)."""
        rows = (self.demographics.get(s, {}) for s in self.students)
        return month_first_seen(d.get("birthDate", "") for d in rows)

    @cached_property
    def sessions(self) -> dict[str, Row]:
        return {s["sourcedId"]: s for s in self.table("academicSessions.csv").rows}

    @cached_property
    def session_dates_us(self) -> bool:
        values = [s.get(k, "") for s in self.sessions.values() for k in ("startDate", "endDate")]
        return month_first_seen(values)

    # --- values --------------------------------------------------------------------------

    def date(self, text: str, *, us_column: bool) -> str | None:
        """An export's date as ISO (None when empty); `DateProblem` when it is not a date."""
        if not text:
            return None
        return read_date(text, self.options.date_format, us_column=us_column)

    def year_group(self, grades: str) -> str | None:
        return grade_year(grades, self.options.grades)


class OneRosterMis:
    """`MisAdapter` over a OneRoster 1.1 or 1.2 CSV bundle: a folder, or a zip.

    `roster` is where the agent keeps its copy of the export (`oneroster_roster`); without
    one, a delta bundle is refused.
    """

    name: str

    def __init__(
        self, directory: Path, options: Options | None = None, *, roster: Path | None = None
    ) -> None:
        self.name = "oneroster"
        self.directory = directory
        self.options = options or Options()
        self.roster = Roster(roster) if roster is not None else None

    def areas(self) -> frozenset[str]:
        try:
            present = set(Source(self.directory).files())
            if self._is_delta() and self.roster is not None:
                present |= self.roster.names()  # a delta may leave orgs or users out
        except AdapterError:
            return frozenset()  # an unreadable zip provides nothing; `check` says why
        if not {"orgs.csv", "users.csv"} <= present:
            return frozenset()
        out = {
            "school.details",
            "students.basic",
            "students.contact_details",
            "staff.basic",
            "contacts",
            "groups",
        }
        if "demographics.csv" in present:
            out.add("students.demographics")
        return frozenset(out)

    def extract(self, area: str) -> Iterator[Record]:
        return iter(self.read(area).records)

    def read(self, area: str) -> AreaRead:
        builder = _BUILDERS.get(area)
        # The bundle first: a delta with no bulk export before provides nothing, and says why.
        bundle = self._bundle()
        if builder is None or area not in self.areas():
            known = "is not in the catalogue" if area not in CATALOGUE else "is not provided"
            raise AdapterError(f"area {area!r} {known} by this OneRoster bundle")
        read = builder(bundle)
        read.from_delta = bundle.delta
        return read

    def describe(self) -> dict[str, Any]:
        """The bundle as `check` shows it: where, files and columns, version, the schools."""
        source = Source(self.directory)
        out: dict[str, Any] = {"source": source.describe(), "files": []}
        for lower, member in sorted(source.files().items()):
            if not lower.endswith(".csv"):
                continue
            try:
                table = read_table(source, lower)
                out["files"].append(
                    {
                        "name": member,
                        "columns": list(table.columns),
                        "rows": len(table.rows),
                        "bad_rows": len(table.broken),
                    }
                )
            except AdapterError as exc:
                out["files"].append({"name": member, "error": str(exc)})
        out["version"] = self._manifest().get("oneroster.version")
        out["delta_files"] = sorted(n for n, m in self._modes().items() if m == "delta")
        bundle = Bundle(source, self.options)
        try:
            out["schools"] = [_school_summary(o) for o in bundle.schools]
            out["school"] = _school_summary(bundle.school)
        except AdapterError as exc:
            out["school_error"] = str(exc)
        return out

    def _bundle(self) -> Bundle:
        modes = self._check_manifest()
        source = Source(self.directory)
        if "delta" not in modes.values():
            if self.roster is not None:
                self.roster.remember(source)
            return Bundle(source, self.options)
        if self.roster is None or not self.roster.ready():
            raise AdapterError(
                "manifest.csv: a delta bundle changes the last bulk export, and this agent"
                " has read none: export bulk files once, then deltas"
            )
        faults = self.roster.apply(source, modes)
        return Bundle(Source(self.roster.folder), self.options, faults=faults, delta=True)

    def _is_delta(self) -> bool:
        return "delta" in self._modes().values()

    def _modes(self) -> dict[str, str]:
        """The manifest's `file.*` values by file name (`file.users` is users.csv)."""
        return {
            key.removeprefix("file.") + ".csv": value
            for key, value in self._manifest().items()
            if key.startswith("file.")
        }

    def _manifest(self) -> dict[str, str]:
        # Exporters differ in case ("file.users,Delta", "OneRoster.Version"): compare lower.
        rows = read_table(Source(self.directory), "manifest.csv").rows
        return {
            r.get("propertyName", "").strip().lower(): r.get("value", "").strip().lower()
            for r in rows
        }

    def _check_manifest(self) -> dict[str, str]:
        """The version must be one we read; the files' modes (bulk, delta, absent)."""
        version = self._manifest().get("oneroster.version")
        if version and not re.fullmatch(r"1\.[012](\.0)*", version):
            raise AdapterError(f"manifest.csv: OneRoster {version} is not supported (1.1, 1.2 are)")
        return self._modes()


def _live(row: Row) -> bool:
    return row.get("status", "").lower() != "tobedeleted"


def _live_user(row: Row) -> bool:
    return _live(row) and row.get("enabledUser", "true").lower() not in ("false", "0", "no")


def _kind(role: str) -> str:
    if role == "student":
        return "student"
    if role in STAFF_ROLES:
        return "staff"
    return "contact" if role in CONTACT_ROLES else ""


def _none(text: str | None) -> str | None:
    return text or None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _digits(text: str) -> str:
    return re.sub(r"[\s/-]", "", text)


def _names_school(org: Row, wanted: str) -> bool:
    key = wanted.strip()
    if key.lower() in (org.get("sourcedId", "").lower(), org.get("identifier", "").lower()):
        return True
    return bool(_digits(key)) and _digits(key) == _digits(org.get("identifier", ""))


def _school_summary(org: Row) -> dict[str, str | None]:
    return {
        "sourcedId": org.get("sourcedId"),
        "name": _none(org.get("name")),
        "identifier": _none(org.get("identifier")),
    }


def describe_schools(orgs: list[Row]) -> str:
    return ", ".join(
        f"{o['sourcedId']} {o.get('name', '')!r} {o.get('identifier', '')}".strip() for o in orgs
    )


def user_ids(row: Row) -> dict[str, str]:
    """`{type:id}` entries of `userIds`, by lower-case type."""
    return {k.strip().lower(): v.strip() for k, v in _USER_ID.findall(row.get("userIds", ""))}


def grade_year(grades: str, table: Mapping[str, str] = DEFAULT_GRADES) -> str | None:
    """The year group of a grade list; `ValueError` for a grade the table does not know.

    None for no grade, and for a class of several years (`09,10,11`): it has no one year.
    """
    names = []
    for code in _split(grades):
        name = table.get(code.upper())
        if name is None:
            raise ValueError("unknown grade (not in the grade table)")
        names.append(name)
    return names[0] if len(set(names)) == 1 else None


def year_group(grades: str, table: Mapping[str, str] = DEFAULT_GRADES) -> str | None:
    """As `grade_year`, with None for an unknown grade."""
    try:
        return grade_year(grades, table)
    except ValueError:
        return None


def school_details(bundle: Bundle) -> AreaRead:
    org = bundle.school
    identifier = _digits(org.get("identifier", ""))
    record = {
        "id": org["sourcedId"],
        "name": _none(org.get("name")),
        "dfe_number": identifier if re.fullmatch(r"\d{7}", identifier) else None,
        "urn": identifier if re.fullmatch(r"\d{6}", identifier) else None,
    }
    return AreaRead([record])


def students_basic(bundle: Bundle) -> AreaRead:
    homeroom = _homeroom_of(bundle)
    out = AreaRead(quarantined=list(bundle.broken_users("student")))
    for user in bundle.students.values():
        student_id = user["sourcedId"]
        ids = user_ids(user)
        upn = next(
            (c for c in (ids.get("upn"), user.get("identifier")) if c and is_valid_upn(c)), None
        )
        identifier = _none(user.get("identifier"))
        demo = bundle.demographics.get(student_id, {})
        broken = bundle.broken_demographics.get(student_id)
        if broken is not None:
            out.quarantined.append(
                Quarantined(
                    student_id, "date_of_birth", "demographics row unreadable", broken.where
                )
            )
            continue
        try:
            year = bundle.year_group(user.get("grades", ""))
        except ValueError as exc:
            out.quarantined.append(Quarantined(student_id, "year_group", str(exc), "users.csv"))
            continue
        try:
            born = bundle.date(demo.get("birthDate", ""), us_column=bundle.birth_dates_us)
        except DateProblem as exc:
            problem = Quarantined(student_id, "date_of_birth", str(exc), "demographics.csv")
            out.quarantined.append(problem)
            continue
        out.records.append(
            {
                "id": student_id,
                "upn": upn,
                "admission_number": ids.get("admissionnumber")
                or (identifier if identifier != upn else None),
                "forename": _none(user.get("givenName")),
                "surname": _none(user.get("familyName")),
                "middle_name": _none(user.get("middleName")),
                "preferred_name": _none(user.get("preferredGivenName")),
                "date_of_birth": born,
                "gender": {"male": "M", "female": "F"}.get(demo.get("sex", "").lower()),
                "year_group": year,
                "registration_group": homeroom.get(student_id),
                "on_roll": True,
                "uln": _none(ids.get("uln")),
            }
        )
    return out


def students_contact_details(bundle: Bundle) -> AreaRead:
    out = AreaRead(quarantined=list(bundle.broken_users("student")))
    for user in bundle.students.values():
        phones = [
            {"type": kind, "number": user[column], "primary": not index}
            for index, (column, kind) in enumerate(
                (c, k) for c, k in (("phone", "home"), ("sms", "mobile")) if user.get(c)
            )
        ]
        email = user.get("email")
        emails = [{"type": "other", "address": email, "primary": True}] if email else []
        out.records.append({"id": user["sourcedId"], "phones": phones, "emails": emails})
    return out


def _homeroom_of(bundle: Bundle) -> dict[str, str]:
    names = _group_names(bundle)
    homerooms = {
        c["sourcedId"] for c in bundle.classes if c.get("classType", "").lower() == "homeroom"
    }
    return {
        e["userSourcedId"]: names[e["classSourcedId"]]
        for e in bundle.enrollments
        if e["classSourcedId"] in homerooms and e.get("role", "").lower() == "student"
    }


def _group_names(bundle: Bundle) -> dict[str, str]:
    """Class names: the title, with the class code when several classes share the title."""
    titles = {
        c["sourcedId"]: c.get("title") or c.get("classCode") or c["sourcedId"]
        for c in bundle.classes
    }
    shared = {t for t, n in Counter(titles.values()).items() if n > 1}
    out = {}
    for row in bundle.classes:
        title = titles[row["sourcedId"]]
        code = row.get("classCode")
        if title in shared:
            title = (
                f"{title} ({code})" if code and code != title else f"{title} ({row['sourcedId']})"
            )
        out[row["sourcedId"]] = title
    return out


def staff_basic(bundle: Bundle) -> AreaRead:
    teaches: dict[str, set[str]] = defaultdict(set)
    for enrollment in bundle.enrollments:
        if enrollment.get("role", "").lower() in STAFF_ROLES:
            teaches[enrollment["userSourcedId"]].add(enrollment["classSourcedId"])
    records: list[Record] = [
        {
            "id": user["sourcedId"],
            "forename": _none(user.get("givenName")),
            "middle_name": _none(user.get("middleName")),
            "surname": _none(user.get("familyName")),
            "staff_code": _none(user.get("identifier")),
            "roles": [user["role"].capitalize()],
            "work_email": _none(user.get("email")),
            "work_phone": _none(user.get("phone")),
            "mobile_phone": _none(user.get("sms")),
            "group_ids": sorted(teaches.get(user["sourcedId"], set())),
        }
        for user in bundle.of_kind("staff")
    ]
    return AreaRead(records, list(bundle.broken_users("staff")))


def contacts(bundle: Bundle) -> AreaRead:
    students = bundle.students
    linked: dict[str, dict[str, int | None]] = defaultdict(dict)
    for student_id, student in students.items():
        for position, agent in enumerate(_split(student.get("agentSourcedIds", "")), start=1):
            linked[agent][student_id] = position
    out = AreaRead(quarantined=list(bundle.broken_users("contact")))
    for user in bundle.of_kind("contact"):
        links = linked[user["sourcedId"]]
        for student_id in _split(user.get("agentSourcedIds", "")):
            if student_id in students:
                links.setdefault(student_id, None)
        if "_other_school" in user and not links:
            continue  # another school's parent, with no pupil here
        out.records.append(_contact(user, links))
    return out


def _contact(user: Row, links: Mapping[str, int | None]) -> Record:
    relationship = user["role"].capitalize()
    responsible = True if user["role"] in ("parent", "guardian") else None
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


def groups(bundle: Bundle) -> AreaRead:
    members: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for enrollment in bundle.enrollments:
        kind = "student_ids" if enrollment.get("role", "").lower() == "student" else "staff_ids"
        members[enrollment["classSourcedId"]][kind].add(enrollment["userSourcedId"])
    names = _group_names(bundle)
    out = AreaRead(quarantined=list(bundle.classes_table.broken))
    for row in bundle.classes:
        try:
            out.records.append(_class_group(bundle, row, names, members[row["sourcedId"]]))
        except _Bad as bad:
            out.quarantined.append(Quarantined(row["sourcedId"], bad.field, bad.problem, bad.where))
    out.records += _year_groups(bundle)
    # A pupil who cannot be placed (unreadable row, unknown grade) would silently leave their
    # year group, and a year of one would be deleted at the broker.
    out.keep_absent = bool(bundle.broken_users("student")) or any(
        _unplaced(bundle, user) for user in bundle.students.values()
    )
    return out


def _unplaced(bundle: Bundle, user: Row) -> bool:
    try:
        bundle.year_group(user.get("grades", ""))
    except ValueError:
        return True
    return False


class _Bad(Exception):
    def __init__(self, field_: str, problem: str, where: str) -> None:
        super().__init__(problem)
        self.field, self.problem, self.where = field_, problem, where


def _class_group(
    bundle: Bundle, row: Row, names: Mapping[str, str], members: Mapping[str, set[str]]
) -> Record:
    terms = [
        bundle.sessions[t] for t in _split(row.get("termSourcedIds", "")) if t in bundle.sessions
    ]
    homeroom = row.get("classType", "").lower() == "homeroom"
    try:
        year = bundle.year_group(row.get("grades", ""))
    except ValueError as exc:
        raise _Bad("year_group", str(exc), "classes.csv") from None
    dates: dict[str, list[str]] = {"start_date": [], "end_date": []}
    for term in terms:
        for column, key in (("startDate", "start_date"), ("endDate", "end_date")):
            try:
                value = bundle.date(term.get(column, ""), us_column=bundle.session_dates_us)
            except DateProblem as exc:
                raise _Bad(key, str(exc), "academicSessions.csv") from None
            if value:
                dates[key].append(value)
    return {
        "id": row["sourcedId"],
        "name": names[row["sourcedId"]],
        "group_type": "registration" if homeroom else "teaching",
        "year_group": year,
        "subject": None if homeroom else next(iter(_split(row.get("subjects", ""))), None),
        "staff_ids": sorted(members.get("staff_ids", set())),
        "student_ids": sorted(members.get("student_ids", set())),
        "start_date": min(dates["start_date"], default=None),
        "end_date": max(dates["end_date"], default=None),
    }


def _year_groups(bundle: Bundle) -> list[Record]:
    years: dict[str, list[str]] = defaultdict(list)
    for student_id, user in bundle.students.items():
        try:
            name = bundle.year_group(user.get("grades", ""))
        except ValueError:
            continue  # quarantined in students.basic; a member of no year group here
        if name:
            years[name].append(student_id)
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


def students_demographics(bundle: Bundle) -> AreaRead:
    students = bundle.students
    out = AreaRead(
        quarantined=[q for q in bundle.demographics_table.broken if q.record_id in students]
    )
    out.records = [
        {"id": student_id, "ethnicity": _ethnicity(row)}
        for student_id, row in bundle.demographics.items()
        if student_id in students
    ]
    return out


def _ethnicity(row: Row) -> str | None:
    if row.get("demographicRaceTwoOrMoreRaces", "").lower() == "true":
        return "Two or more races"
    named = [label for column, label in _RACES if row.get(column, "").lower() == "true"]
    return named[0] if len(named) == 1 else ("Two or more races" if named else None)


_BUILDERS: Final[Mapping[str, Callable[[Bundle], AreaRead]]] = {
    "school.details": school_details,
    "students.basic": students_basic,
    "students.contact_details": students_contact_details,
    "staff.basic": staff_basic,
    "contacts": contacts,
    "groups": groups,
    "students.demographics": students_demographics,
}
