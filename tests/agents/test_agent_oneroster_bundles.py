"""Real-world OneRoster bundles, written by hand the way exporters write them.

- `york_1_2`: OneRoster 1.2 without a manifest: users.csv has no `role` column (roles.csv
  holds them), ISO date-time birth dates, a disabled pupil, an ungraded pupil, a teacher
  enrolled with a student role, a deleted class, two classes titled "Science" and one of
  them for Years 9-11, pupil email and phone, a teacher's middle name and mobile.
- `bradford_two_schools_1_1`: a trust's export holding two primary schools, with
  mixed-case file names, a `1.1.0` manifest, UK day-first dates, a parent with a child in
  each school, and a US-order date in the other school's rows.
- the York bundle zipped: a folder holding only the zip, and `directory` naming the zip.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from agents.config import ConfigError, MisSettings
from agents.extract import check
from agents.inspect import inspect_mis
from agents.mis.base import AdapterError, AreaRead
from agents.mis.oneroster import DEFAULT_GRADES, OneRosterMis, Options, grade_year
from agents.mis.registry import build_adapter

BUNDLES = Path(__file__).parent / "bundles"
YORK = BUNDLES / "york_1_2"
BRADFORD = BUNDLES / "bradford_two_schools_1_1"


def read(mis: OneRosterMis, area: str) -> AreaRead:
    """The area, checked as the agent checks it: the catalogue accepts every record."""
    got = mis.read(area)
    checked = check(area, got.records)
    assert checked.quarantined == [], checked.invalid
    return got


def by_id(mis: OneRosterMis, area: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read(mis, area).records}


# --- OneRoster 1.2 -------------------------------------------------------------------------


def test_a_1_2_bundle_takes_roles_from_roles_csv() -> None:
    mis = OneRosterMis(YORK)
    students = by_id(mis, "students.basic")
    # p3 is disabled; p4 is ungraded (quarantined); t2, enrolled as a student, is staff.
    assert set(students) == {"p1", "p2", "p5"}
    assert set(by_id(mis, "staff.basic")) == {"t1", "t2"}
    assert set(by_id(mis, "contacts")) == {"g1"}
    assert by_id(mis, "school.details") == {
        "sch-1": {
            "id": "sch-1",
            "name": "Fulford Bridge School",
            "dfe_number": None,
            "urn": "139876",
        }
    }


def test_iso_date_times_keep_their_date_and_preferred_names_are_read() -> None:
    students = by_id(OneRosterMis(YORK), "students.basic")
    assert students["p1"]["date_of_birth"] == "2010-09-14"
    assert students["p2"]["date_of_birth"] == "2009-11-01"
    assert students["p5"]["date_of_birth"] == "2009-12-30"
    assert students["p2"]["preferred_name"] == "Ben"
    assert students["p2"]["admission_number"] == "004102"
    assert students["p1"]["registration_group"] == "9Y"
    assert students["p1"]["year_group"] == "Year 9"


def test_an_unknown_grade_is_quarantined_never_a_junk_year_group() -> None:
    got = OneRosterMis(YORK).read("students.basic")
    [problem] = got.quarantined
    assert (problem.record_id, problem.field) == ("p4", "year_group")
    assert "unknown grade" in problem.problem
    years = {g["name"] for g in by_id(OneRosterMis(YORK), "groups").values()}
    assert "UG" not in years


@pytest.mark.parametrize("code", ["UG", "TK", "PS", "Other", "IT"])
def test_unknown_grades_are_refused_by_the_default_table(code: str) -> None:
    with pytest.raises(ValueError, match="unknown grade"):
        grade_year(code)


def test_the_grade_table_is_configurable() -> None:
    options = Options.with_grades(None, "auto", {"UG": "Ungraded", "PK": ""})
    assert grade_year("UG", options.grades) == "Ungraded"
    with pytest.raises(ValueError, match="unknown grade"):
        grade_year("PK", options.grades)
    assert grade_year("PK", DEFAULT_GRADES) == "Nursery"


def test_groups_enrollments_count_only_live_users_and_classes_with_matching_roles() -> None:
    groups = by_id(OneRosterMis(YORK), "groups")
    assert "c-hi" not in groups  # tobedeleted
    ks4, sc2 = groups["c-sc1"], groups["c-sc2"]
    assert ks4["year_group"] is None  # 09,10,11: no one year group, never Year 9
    assert sc2["year_group"] == "Year 10"
    # Two classes titled Science: named with their class codes.
    assert (ks4["name"], sc2["name"]) == ("Science (KS4-Sc1)", "Science (10-Sc2)")
    assert groups["c-9y"]["name"] == "9Y"
    assert ks4["student_ids"] == ["p1", "p2"]  # p3 is disabled
    assert sc2["student_ids"] == ["p2", "p5"]  # t2 enrolled as a student is not one
    assert sc2["staff_ids"] == []
    assert groups["c-9y"]["staff_ids"] == ["t2"]
    assert (ks4["start_date"], ks4["end_date"]) == ("2025-09-01", "2026-07-22")
    staff = by_id(OneRosterMis(YORK), "staff.basic")
    assert staff["t1"]["group_ids"] == ["c-sc1"]  # the deleted class is gone


def test_pupil_contact_details_and_staff_middle_name_and_mobile() -> None:
    mis = OneRosterMis(YORK)
    details = by_id(mis, "students.contact_details")
    assert details["p1"]["emails"] == [
        {"type": "other", "address": "ava.brooks@pupils.fbs.sch.uk", "primary": True}
    ]
    assert details["p1"]["phones"] == [
        {"type": "mobile", "number": "07700 900101", "primary": True}
    ]
    assert details["p2"]["phones"] == [{"type": "home", "number": "01904 555102", "primary": True}]
    t1 = by_id(mis, "staff.basic")["t1"]
    assert (t1["middle_name"], t1["mobile_phone"]) == ("Rose", "07700 900201")
    assert t1["roles"] == ["Teacher"]  # the primary role at this school, not the trust's


def test_a_1_2_bundle_without_roles_csv_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    folder = Path(shutil.copytree(YORK, tmp_path / "york"))
    (folder / "roles.csv").unlink()
    mis = OneRosterMis(folder)
    assert mis.read("school.details").records  # the school still reads
    with pytest.raises(AdapterError, match="no role column"):
        mis.read("students.basic")


# --- zip bundles ---------------------------------------------------------------------------


def zipped(tmp_path: Path, *, subfolder: str = "") -> Path:
    target = tmp_path / "drop" / "fbs-oneroster.zip"
    target.parent.mkdir()
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(YORK.iterdir()):
            archive.write(path, subfolder + path.name.upper() if subfolder else path.name)
    return target


@pytest.mark.parametrize("subfolder", ["", "export-2025-09-01/"])
def test_a_folder_holding_only_a_zip_is_read(tmp_path: Path, subfolder: str) -> None:
    archive = zipped(tmp_path, subfolder=subfolder)
    mis = OneRosterMis(archive.parent)
    assert mis.areas() == OneRosterMis(YORK).areas()
    assert by_id(mis, "students.basic") == by_id(OneRosterMis(YORK), "students.basic")


def test_directory_may_name_the_zip(tmp_path: Path) -> None:
    archive = zipped(tmp_path)
    mis = build_adapter(MisSettings("oneroster", {"directory": archive}))
    assert isinstance(mis, OneRosterMis)
    assert set(by_id(mis, "groups")) >= {"c-9y", "c-sc1", "c-sc2"}


def test_check_reads_the_zip_and_fails_an_unreadable_one(tmp_path: Path) -> None:
    archive = zipped(tmp_path)
    report = inspect_mis(OneRosterMis(archive.parent))
    assert report.ok, report.problems
    assert report.described["source"].startswith("zip ")
    assert report.areas["students.basic"] == {
        "records": 3,
        "quarantined": 1,
        "quarantined_records": [
            {
                "id": "p4",
                "field": "year_group",
                "problem": "unknown grade (not in the grade table)",
                "where": "users.csv",
            }
        ],
    }
    archive.write_bytes(b"PK\x03\x04 not really a zip")
    broken = inspect_mis(OneRosterMis(archive.parent))
    assert not broken.ok
    assert "not a readable zip file" in " ".join(broken.problems)


# --- two schools ---------------------------------------------------------------------------


def test_two_schools_without_a_choice_fail_every_area_and_check_names_them() -> None:
    mis = OneRosterMis(BRADFORD)
    for area in ("school.details", "students.basic", "groups", "contacts"):
        with pytest.raises(AdapterError, match="holds 2 schools"):
            mis.read(area)
    report = inspect_mis(mis)
    assert not report.ok
    shown = " ".join(report.problems)
    assert "Heaton Park Primary" in shown
    assert "Manningham Lane Primary" in shown
    assert "[mis] school" in shown
    assert [s["sourcedId"] for s in report.described["schools"]] == ["hpp", "mlp"]


@pytest.mark.parametrize("school", ["3804001", "380/4001", "hpp", "HPP"])
def test_the_chosen_school_takes_only_its_people_classes_and_enrollments(school: str) -> None:
    mis = OneRosterMis(BRADFORD, Options(school=school))
    assert set(by_id(mis, "school.details")) == {"hpp"}
    assert by_id(mis, "school.details")["hpp"]["dfe_number"] == "3804001"
    students = by_id(mis, "students.basic")
    assert set(students) == {"hp-s1", "hp-s2", "hp-s3"}
    assert set(by_id(mis, "staff.basic")) == {"hp-t1"}
    groups = by_id(mis, "groups")
    assert {g for g in groups if not g.startswith("year-")} == {"hp-1b", "hp-rr", "hp-6f"}
    assert groups["hp-1b"]["staff_ids"] == ["hp-t1"]
    everything = str([by_id(mis, a) for a in sorted(mis.areas())])
    assert "ml-" not in everything
    assert "Manningham" not in everything
    # The parent with a child in each school is this school's contact for one child only.
    assert by_id(mis, "contacts")["par-1"]["student_ids"] == ["hp-s1"]


def test_uk_dates_are_read_day_first_and_another_schools_bad_date_is_not_ours() -> None:
    mis = OneRosterMis(BRADFORD, Options(school="3804001"))
    students = by_id(mis, "students.basic")
    assert students["hp-s1"]["date_of_birth"] == "2018-04-17"
    assert students["hp-s2"]["date_of_birth"] == "2020-09-03"
    assert students["hp-s2"]["year_group"] == "Reception"
    assert mis.read("students.basic").quarantined == []
    other = OneRosterMis(BRADFORD, Options(school="3804002")).read("students.basic")
    [problem] = other.quarantined  # 4/17/2017: impossible day-first
    assert (problem.record_id, problem.field) == ("ml-s1", "date_of_birth")


def test_a_school_that_matches_none_is_refused() -> None:
    with pytest.raises(AdapterError, match="matches 0 of the export's schools"):
        OneRosterMis(BRADFORD, Options(school="9999999")).read("students.basic")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"date_format": "us"}, "mis.date_format: expected one of iso, uk, auto"),
        ({"school": ""}, "mis.school"),
        ({"grades": {"UG": 7}}, "mis.grades"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_adapter(MisSettings("oneroster", {"directory": BRADFORD, **options}))


def test_date_format_iso_quarantines_uk_dates() -> None:
    mis = build_adapter(
        MisSettings("oneroster", {"directory": BRADFORD, "school": 3804001, "date_format": "iso"})
    )
    assert isinstance(mis, OneRosterMis)
    got = mis.read("students.basic")
    assert {q.record_id for q in got.quarantined} == {"hp-s1", "hp-s2"}
    assert [r["id"] for r in got.records] == ["hp-s3"]
