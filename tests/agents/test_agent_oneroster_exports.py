"""Real-world OneRoster exports: a fault in one file fails only the areas built from it.

The bundle under `bundles/leeds_1_1` is written by hand as an exporter writes one (CRLF
manifest, trust and school orgs, homerooms and scheduled classes); each test breaks one
thing the way the issue's exports were broken.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.mis.base import AdapterError
from agents.mis.oneroster import OneRosterMis

BUNDLE = Path(__file__).parent / "bundles" / "leeds_1_1"
USERS_DERIVED = (
    "students.basic",
    "students.contact_details",
    "staff.basic",
    "contacts",
    "groups",
    "students.demographics",
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return Path(shutil.copytree(BUNDLE, tmp_path / "export"))


def header_only(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")


def counts(mis: OneRosterMis) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for area in sorted(mis.areas()):
        try:
            out[area] = len(list(mis.extract(area)))
        except AdapterError as exc:
            out[area] = f"failed: {exc}"
    return out


def test_the_bundle_reads_whole(folder: Path) -> None:
    assert counts(OneRosterMis(folder)) == {
        "contacts": 8,
        "groups": 6,  # four classes and two year groups
        "school.details": 1,
        "staff.basic": 2,
        "students.basic": 8,
        "students.contact_details": 8,
        "students.demographics": 8,
    }


def test_a_header_only_users_file_fails_its_areas_not_school_details(folder: Path) -> None:
    header_only(folder / "users.csv")
    result = counts(OneRosterMis(folder))
    assert result["school.details"] == 1
    for area in USERS_DERIVED:
        assert "users.csv holds no users" in str(result[area]), area


def test_an_old_demographics_header_fails_only_the_areas_that_read_it(folder: Path) -> None:
    path = folder / "demographics.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("sourcedId,", "userSourcedId,", 1), encoding="utf-8")
    result = counts(OneRosterMis(folder))
    assert "no sourcedId column" in str(result["students.basic"])
    assert "no sourcedId column" in str(result["students.demographics"])
    assert {a: result[a] for a in ("school.details", "staff.basic", "contacts", "groups")} == {
        "school.details": 1,
        "staff.basic": 2,
        "contacts": 8,
        "groups": 6,
    }


def test_file_names_are_matched_without_case(folder: Path) -> None:
    for name, other in (("classes.csv", "Classes.csv"), ("enrollments.csv", "ENROLLMENTS.CSV")):
        (folder / name).rename(folder / other)
    (folder / "users.csv").rename(folder / "Users.csv")
    groups = {g["id"]: g for g in OneRosterMis(folder).extract("groups")}
    assert len(groups) == 6
    assert groups["cls-7a"]["student_ids"] == ["stu-01", "stu-02", "stu-03", "stu-04"]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([["oneroster.version", "1.1.0"], ["file.users", "Bulk"]], None),
        ([["OneRoster.Version", "1.1"]], None),
        ([["file.users", "Delta"]], "a delta bundle changes the last bulk export"),
        ([["oneroster.version", "1.2"]], None),
        ([["oneroster.version", "2.0"]], "OneRoster 2.0 is not supported"),
    ],
)
def test_manifest_values_are_matched_without_case(
    folder: Path, rows: list[list[str]], problem: str | None
) -> None:
    lines = ["propertyName,value", *(",".join(r) for r in rows)]
    (folder / "manifest.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    mis = OneRosterMis(folder)
    if problem is None:
        assert len(list(mis.extract("students.basic"))) == 8
    else:
        with pytest.raises(AdapterError, match=problem):
            list(mis.extract("students.basic"))
