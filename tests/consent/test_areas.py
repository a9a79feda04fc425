"""The catalogue matches DESIGN.md and validates uploaded records field by field."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from consent.areas import (
    AREAS,
    CATALOGUE,
    CORE_AREAS,
    MAX_LIST_ITEMS,
    MAX_STRING_LENGTH,
    SENSITIVE_AREAS,
    FieldSpec,
    FieldType,
    UnknownAreaError,
    _check_value,  # the general check: their reference
    field_check,  # the quick field checks
    get_area,
    parse_area_list,
    parse_instant,
    record_is_valid,
    validate_record,
)

# area: (validity, core, sensitive), as DESIGN.md's table has them
DESIGN_TABLE = {
    "school.details": (timedelta(hours=24), True, False),
    "groups": (timedelta(hours=24), True, False),
    "timetable": (timedelta(hours=24), True, False),
    "students.basic": (timedelta(hours=24), True, False),
    "students.contact_details": (timedelta(hours=24), True, False),
    "students.demographics": (timedelta(hours=24), True, True),
    "students.sen": (timedelta(hours=24), False, True),
    "students.attendance_summary": (timedelta(hours=24), True, False),
    "students.photos": (timedelta(days=7), True, False),
    "contacts": (timedelta(hours=24), True, False),
    "staff.basic": (timedelta(hours=24), True, False),
    "staff.personal": (timedelta(hours=24), True, True),
    "staff.photos": (timedelta(days=7), True, False),
    "attendance.codes": (timedelta(hours=24), True, False),
    "attendance.marks": (timedelta(hours=24), False, False),
    "behaviour": (timedelta(hours=24), False, True),
    "exams": (timedelta(hours=24), False, False),
}


def test_catalogue_matches_the_design_table() -> None:
    assert list(CATALOGUE) == list(DESIGN_TABLE)
    for name, (validity, core, sensitive) in DESIGN_TABLE.items():
        area = CATALOGUE[name]
        assert (area.validity, area.core, area.sensitive) == (validity, core, sensitive), name
    assert {a for a, (_, core, _) in DESIGN_TABLE.items() if core} == CORE_AREAS
    assert {a for a, (_, _, s) in DESIGN_TABLE.items() if s} == SENSITIVE_AREAS


def test_students_basic_holds_exactly_the_design_fields() -> None:
    expected = [
        "upn",
        "admission_number",
        "forename",
        "surname",
        "legal_forename",
        "legal_surname",
        "middle_name",
        "preferred_name",
        "date_of_birth",
        "gender",
        "year_group",
        "registration_group",
        "house",
        "on_roll",
        "entry_date",
        "leaving_date",
        "uln",
        "exam_number",
    ]
    assert list(get_area("students.basic").field_names) == expected


def test_field_names_are_snake_case_and_typed() -> None:
    for area in AREAS:
        for spec in area.fields:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), (area.name, spec.name)
            assert isinstance(spec.type, FieldType)
            assert (spec.type is FieldType.OBJECT_LIST) == bool(spec.item_fields)


def test_photos_are_binary_areas() -> None:
    assert {a.name for a in AREAS if a.binary} == {"students.photos", "staff.photos"}


def test_unknown_area() -> None:
    with pytest.raises(UnknownAreaError, match=r"students\.shoe_size"):
        get_area("students.shoe_size")
    assert parse_area_list(" groups, students.basic ,groups") == ("groups", "students.basic")


def _problems(area: str, record: object) -> list[tuple[str, str]]:
    return [(e.field, e.message) for e in validate_record(get_area(area), 0, record)]


def test_a_good_record_passes() -> None:
    record = {
        "id": "stu-1",
        "upn": "A123456789012",
        "forename": "Amara",
        "date_of_birth": "2013-04-09",
        "gender": "F",
        "on_roll": True,
        "leaving_date": None,
    }
    assert _problems("students.basic", record) == []
    assert record_is_valid(get_area("students.basic"), record)


@pytest.mark.parametrize(
    ("area", "record", "field", "message"),
    [
        ("students.basic", {"upn": "A1"}, "id", "missing id"),
        ("students.basic", {"id": "has space"}, "id", "id must be"),
        ("students.basic", {"id": "s", "shoe_size": 5}, "shoe_size", "unknown field"),
        ("students.basic", {"id": "s", "forename": 7}, "forename", "expected a string"),
        ("students.basic", {"id": "s", "date_of_birth": "09/04/2013"}, "date_of_birth", "date"),
        ("students.basic", {"id": "s", "date_of_birth": "2013-02-30"}, "date_of_birth", "date"),
        ("students.basic", {"id": "s", "on_roll": "yes"}, "on_roll", "true or false"),
        ("students.basic", {"id": "s", "gender": "female"}, "gender", "one of"),
        ("attendance.marks", {"id": "m", "session": "EVE"}, "session", "AM, PM"),
        ("contacts", {"id": "c", "priority": True}, "priority", "integer"),
        (
            "students.attendance_summary",
            {"id": "a", "attendance_percent": "95"},
            "attendance_percent",
            "number",
        ),
        ("timetable", {"id": "l", "start_time": "9am"}, "start_time", "HH:MM"),
        ("students.photos", {"id": "p", "photo": "not base64!"}, "photo", "base64"),
        ("groups", {"id": "g", "student_ids": ["a", 2]}, "student_ids", "list of strings"),
        ("contacts", {"id": "c", "phones": [{"number": 7}]}, "phones", "item 0.number"),
        ("contacts", {"id": "c", "phones": [{"colour": "red"}]}, "phones", "unknown field"),
    ],
)
def test_bad_values_are_named(
    area: str, record: dict[str, object], field: str, message: str
) -> None:
    problems = _problems(area, record)
    assert any(f == field and message in m for f, m in problems), problems
    assert not record_is_valid(get_area(area), record)  # the quick test never lets one by


def test_non_object_record() -> None:
    assert _problems("groups", ["not", "an", "object"]) == [("", "expected an object")]
    assert not record_is_valid(get_area("groups"), ["not", "an", "object"])


ODD_VALUES: list[object] = [
    None, True, False, 0, 1, -1, 2**70, 1.5, float("nan"), float("inf"), "", "x", "x" * 5000,
    "2013-04-09", "2013-02-30", "09:00", "2026-11-23T09:00:00Z", "aGVsbG8=", [], ["a"], [1],
    [{}], [{"number": "1"}], [{"number": 1}], [{"colour": "red"}], {}, {"a": 1},
    # At the edges of the quick checks for dates, times, numbers and lists of strings:
    "2025-W47-3", "20251119", "2025-11-19 ", "24:00", "9:00", "23:59", -0.0, 1e308,
    ["a", 1], ["x" * (MAX_STRING_LENGTH + 1)], ["a"] * (MAX_LIST_ITEMS + 1), [None],
    "x" * MAX_STRING_LENGTH, "x" * (MAX_STRING_LENGTH + 1),
]  # fmt: skip


@pytest.mark.parametrize("area", sorted(CATALOGUE))
def test_the_quick_test_agrees_with_the_full_validation(area: str) -> None:
    """`record_is_valid` says yes exactly when `validate_record` finds nothing, for every
    field of every area given values of every kind."""
    spec = get_area(area)
    records: list[object] = [{"id": "r-1"}, {"id": 7}, {}, {"id": "bad id"}, {"id": "r", "x": 1}]
    for field in spec.fields:
        values = [*ODD_VALUES, *(field.choices or ())]
        records += [{"id": "r-1", field.name: value} for value in values]
    # Every field at once, each with a valid value (the common upload record), and then
    # with one of them spoiled.
    whole = {"id": "r-1", **{field.name: _valid_value(field) for field in spec.fields}}
    records += [whole, *({**whole, name: ["not", "this"]} for name in whole)]
    for record in records:
        assert record_is_valid(spec, record) == (not list(validate_record(spec, 0, record))), record


def _valid_value(spec: FieldSpec) -> object:
    candidates: list[object] = [*(spec.choices or ()), *ODD_VALUES]
    if spec.item_fields:
        candidates.insert(0, [{item.name: _valid_value(item) for item in spec.item_fields}])
    return next(v for v in candidates if v is not None and _check_value(spec, v) is None)


def _every_field_spec() -> list[FieldSpec]:
    specs: list[FieldSpec] = []
    pending = [spec for area in AREAS for spec in area.fields]
    while pending:
        spec = pending.pop()
        specs.append(spec)
        pending.extend(spec.item_fields)
    return specs


@pytest.mark.parametrize("spec", _every_field_spec(), ids=lambda spec: f"{spec.name}:{spec.type}")
def test_each_quick_field_check_answers_as_the_general_one(spec: FieldSpec) -> None:
    """The quick checks settle common valid values by a type test before the general
    check: for every field (object-list items too) and value of every kind, the answer and
    the message are the general check's."""
    quick = field_check(spec)
    for value in ODD_VALUES:
        assert quick(value) == _check_value(spec, value), value


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-11-23T09:00:00Z", True),
        ("2026-11-23T09:00:00.123+01:00", True),
        ("2026-11-23T09:00:00", False),  # naive: refused
        ("2026-11-23", False),
        ("yesterday", False),
    ],
)
def test_parse_instant(text: str, ok: bool) -> None:
    assert (parse_instant(text) is not None) is ok
