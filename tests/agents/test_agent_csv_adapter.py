"""The csv adapter: default and mapped columns, UK formats, precise errors, valid records."""

import base64
import csv
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from agents.mis.base import AdapterError, MisAdapter
from agents.mis.csv_adapter import CsvMis, load_mapping
from agents.mis.synthetic import SyntheticMis
from consent.areas import CATALOGUE, FieldType, validate_record

ROUND_TRIP = (
    "school.details",
    "students.basic",
    "contacts",
    "groups",
    "students.demographics",
    "students.attendance_summary",
    "timetable",
    "staff.photos",
)


def cell(value: Any, kind: FieldType) -> str:
    if value is None:
        return ""
    if kind is FieldType.BOOLEAN:
        return "true" if value else "false"
    if kind is FieldType.STRING_LIST:
        return ";".join(value)
    if kind is FieldType.OBJECT_LIST:
        return json.dumps(value)
    return str(value)


def export(mis: MisAdapter, area: str, folder: Path) -> None:
    """Write an area as the documented default CSV format."""
    spec = CATALOGUE[area]
    with (folder / f"{area}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *spec.field_names])
        for record in mis.extract(area):
            writer.writerow(
                [record["id"]] + [cell(record.get(f.name), f.type) for f in spec.fields]
            )


def present(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v not in (None, [], "")}


def assert_valid(records: list[dict[str, Any]], area: str) -> None:
    problems = [e for i, r in enumerate(records) for e in validate_record(CATALOGUE[area], i, r)]
    assert problems == []


@pytest.fixture(scope="module")
def school() -> SyntheticMis:
    return SyntheticMis(seed=21, pupils=60, phase="secondary", day=date(2025, 11, 19))


@pytest.mark.parametrize("area", ROUND_TRIP)
def test_the_default_format_round_trips_the_synthetic_school(
    tmp_path: Path, school: SyntheticMis, area: str
) -> None:
    export(school, area, tmp_path)
    adapter = CsvMis(tmp_path)
    assert area in adapter.areas()
    got = list(adapter.extract(area))
    assert_valid(got, area)
    assert [present(r) for r in got] == [present(r) for r in school.extract(area)]


def test_areas_are_the_files_present(tmp_path: Path) -> None:
    (tmp_path / "groups.csv").write_text("id,name\n")
    (tmp_path / "notes.csv").write_text("id\n")
    assert CsvMis(tmp_path).areas() == frozenset({"groups"})
    with pytest.raises(AdapterError, match="no export file"):
        CsvMis(tmp_path).extract("contacts")


MAPPING = """
[areas."students.basic"]
file = "Pupils Export.csv"
id = "Adno"
delimiter = ";"
[areas."students.basic".columns]
"Legal Forename" = "forename"
"Legal Surname" = "surname"
"DOB" = "date_of_birth"
"Sex" = "gender"
"On Roll" = "on_roll"
"Reg" = "registration_group"
"""

PUPILS = (
    "\ufeffAdno;Legal Forename;Legal Surname;DOB;Sex;On Roll;Reg;Shoe size\n"
    '001234;Zoë;"O\'Brien; Smith";07/03/2012;F;Y;8B;5\n'
    ";;;;;;;\n"
    '001235;"Ana, María";García;2012-11-30;M;no;;\n'
)


def test_a_mapping_file_renames_columns_and_reads_uk_formats(tmp_path: Path) -> None:
    (tmp_path / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "Pupils Export.csv").write_text(PUPILS, encoding="utf-8")
    adapter = CsvMis(tmp_path, load_mapping(tmp_path / "mapping.toml"))
    got = list(adapter.extract("students.basic"))
    assert_valid(got, "students.basic")
    assert got == [
        {
            "id": "001234",
            "forename": "Zoë",
            "surname": "O'Brien; Smith",
            "date_of_birth": "2012-03-07",
            "gender": "F",
            "on_roll": True,
            "registration_group": "8B",
        },
        {
            "id": "001235",
            "forename": "Ana, María",
            "surname": "García",
            "date_of_birth": "2012-11-30",
            "gender": "M",
            "on_roll": False,
            "registration_group": None,
        },
    ]


def test_phones_and_emails_have_a_compact_form_and_photos_can_be_files(tmp_path: Path) -> None:
    jpeg = b"\xff\xd8\xff\xe0fakejpeg\xff\xd9"
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "s1.jpg").write_bytes(jpeg)
    (tmp_path / "students.contact_details.csv").write_text(
        "id,phones,emails,postcode\n"
        's1,"mobile:07700 900123; home:0113 496 0000",home:a@example.org,LS1 4AP\n'
    )
    (tmp_path / "students.photos.csv").write_text("id,photo,photo_available\ns1,photos/s1.jpg,1\n")
    adapter = CsvMis(tmp_path)
    (contact,) = adapter.extract("students.contact_details")
    assert contact["phones"] == [
        {"type": "mobile", "number": "07700 900123", "primary": True},
        {"type": "home", "number": "0113 496 0000", "primary": False},
    ]
    assert contact["emails"] == [{"type": "home", "address": "a@example.org", "primary": True}]
    (photo,) = adapter.extract("students.photos")
    assert base64.b64decode(photo["photo"]) == jpeg
    assert_valid([contact], "students.contact_details")
    assert_valid([photo], "students.photos")


@pytest.mark.parametrize(
    ("text", "quarantined"),
    [
        (
            "id,date_of_birth\ns1,2012-01-01\ns2,31/02/2012\n",
            ("s2", "date_of_birth", "not a real date", "students.basic.csv:3"),
        ),
        (
            "id,on_roll\ns1,yes\ns2,perhaps\n",
            ("s2", "on_roll", "expected true/false, yes/no, y/n or 1/0", "students.basic.csv:3"),
        ),
        ("id,forename\ns1,A\n,B\n", (None, "id", "empty id", "students.basic.csv:3")),
        (
            "id,forename\ns1,A\ns2,B,extra\n",
            ("s2", "", "3 values for 2 columns", "students.basic.csv:3"),
        ),
    ],
)
def test_a_bad_row_is_quarantined_by_id_field_and_kind_never_the_value(
    tmp_path: Path, text: str, quarantined: tuple[str | None, str, str, str]
) -> None:
    (tmp_path / "students.basic.csv").write_text(text)
    read = CsvMis(tmp_path).read("students.basic")
    assert [r["id"] for r in read.records] == ["s1"]
    [problem] = read.quarantined
    assert (problem.record_id, problem.field, problem.problem, problem.where) == quarantined
    shown = problem.describe() + str(problem.as_json())
    assert "31/02" not in shown
    assert "perhaps" not in shown
    assert "extra" not in shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("forename\nA\n", r"no id column 'id'"),
        ("id,forename,forename\ns1,A,B\n", r"column 'forename' appears twice"),
    ],
)
def test_a_bad_header_fails_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "students.basic.csv").write_text(text)
    with pytest.raises(AdapterError, match=message):
        list(CsvMis(tmp_path).extract("students.basic"))


def test_numbers_times_and_lists(tmp_path: Path) -> None:
    (tmp_path / "timetable.csv").write_text(
        "id,period,start_time,end_time,staff_ids\nl1,Mon:1,8:50,09:50:00,T1; T2;\n"
    )
    (tmp_path / "students.attendance_summary.csv").write_text(
        "id,possible_marks,attendance_percent\ns1,120,95.5%\n"
    )
    adapter = CsvMis(tmp_path)
    (lesson,) = adapter.extract("timetable")
    assert lesson == {
        "id": "l1",
        "period": "Mon:1",
        "start_time": "08:50",
        "end_time": "09:50",
        "staff_ids": ["T1", "T2"],
    }
    (summary,) = adapter.extract("students.attendance_summary")
    assert summary == {"id": "s1", "possible_marks": 120, "attendance_percent": 95.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[areas."nope"]\n', "not a catalogue area"),
        ('[areas."groups".columns]\n"Name" = "title"\n', "maps to unknown field 'title'"),
        ('[areas."groups"]\ncolour = 1\n', "keys are file, id, delimiter"),
        ("x = 1\n", "expected only"),
    ],
)
def test_bad_mapping_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(AdapterError, match=message):
        load_mapping(tmp_path / "m.toml")
