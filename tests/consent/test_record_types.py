"""The check in C (msgspec) is only ever a quicker yes: whatever it passes, `record_is_valid`
passes too, record by record.  Where it refuses, the Python checks decide, so an upload
gets the same answer and the same messages as before."""

from __future__ import annotations

import base64
import collections
import decimal
import functools
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.extract import check
from broker.agenthub.uploads import UploadRejectedError, parse_upload
from consent.areas import (
    CATALOGUE,
    MAX_LIST_ITEMS,
    MAX_STRING_LENGTH,
    Area,
    FieldSpec,
    FieldType,
    get_area,
    record_is_valid,
)
from consent.record_types import record_passes, records_pass
from tests.consent.test_areas import ODD_VALUES, _valid_value


def _as_json(value: Any) -> Any:
    """`value` as the broker gets it: written by orjson, read back."""
    return orjson.loads(orjson.dumps(value))


def _json_values() -> list[object]:
    """ODD_VALUES that JSON can carry (no NaN, no integer past 64 bits), as read back."""
    kept = []
    for value in ODD_VALUES:
        try:
            kept.append(_as_json(value))
        except orjson.JSONEncodeError:
            continue
    return kept


def _whole(spec: Area) -> dict[str, Any]:
    """A record with a valid value in every field: the common upload record."""
    return {"id": "r-1", **{field.name: _valid_value(field) for field in spec.fields}}


def _agrees(spec: Area, record: Any) -> bool:
    """The promise, for one record: a yes in C is a yes in Python."""
    if records_pass(spec, [record]):
        assert record_is_valid(spec, record), record
        return True
    return False


@pytest.mark.parametrize("area", sorted(CATALOGUE))
def test_every_value_it_passes_is_valid(area: str) -> None:
    spec = get_area(area)
    whole = _as_json(_whole(spec))
    records: list[Any] = [{"id": "r-1"}, {"id": 7}, {}, {"id": "bad id"}, {"id": "r", "x": 1}]
    records += [{"id": "r-1\n"}, {"id": "r" * 129}, {"id": "r" * 128}, ["not", "a", "record"]]
    for field in spec.fields:
        for value in [*_json_values(), *(field.choices or ())]:
            records.append({"id": "r-1", field.name: value})
            records.append({**whole, field.name: value})
    passed = sum(_agrees(spec, record) for record in records)
    # ... and it does pass the common record, or it would be no quicker.
    assert records_pass(spec, [whole])
    assert passed > len(spec.fields)


# Values either check may find hard: at the limits, of the wrong JSON type, or valid only
# by the one check's reading (an ISO week date is a date to `date.fromisoformat`).
_EDGES: list[object] = [
    "x" * MAX_STRING_LENGTH,
    "x" * (MAX_STRING_LENGTH + 1),
    "\U0001f600" * MAX_STRING_LENGTH,  # characters, not bytes, are counted
    "é" * (MAX_STRING_LENGTH + 1),
    ["a"] * MAX_LIST_ITEMS,
    ["a"] * (MAX_LIST_ITEMS + 1),
    [{}] * (MAX_LIST_ITEMS + 1),
    "2024-02-29",
    "2025-02-29",
    "0000-01-01",
    "9999-12-31",
    "2025-W47-3",
    "2025-11-19\n",
    "12:30\n",
    "23:59",
    "24:00",
    1.7976931348623157e308,
    -1.7976931348623157e308,
    9223372036854775807,
    -9223372036854775808,
    18446744073709551615,
    True,
    1.0,
    0,
    "aGVsbG8=",
    "aGVsbG8",
    "aGVs bG8=",
    "",
]


@pytest.mark.parametrize("area", sorted(CATALOGUE))
def test_values_at_the_edges(area: str) -> None:
    spec = get_area(area)
    whole = _as_json(_whole(spec))
    for field in spec.fields:
        for value in _EDGES:
            _agrees(spec, {**whole, field.name: value})
            for item in field.item_fields:
                inner = {**whole[field.name][0], item.name: value}
                _agrees(spec, {**whole, field.name: [inner]})


# The edges short enough to draw thousands of times (the long ones have their own test).
_SMALL_EDGES: list[object] = [v for v in _EDGES if not isinstance(v, str | list) or len(v) < 100]


@functools.cache  # a strategy is built once per field: building is most of a draw's cost
def _value(field: FieldSpec) -> st.SearchStrategy[Any]:
    """A valid value, an edge, or any JSON value at all."""
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.from_regex(r"\A\d{4}-\d{2}-\d{2}\Z"),  # date-like, real or not
        st.from_regex(r"\A\d{2}:\d{2}\Z"),
    )
    anything = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=8,
    )
    options = [st.just(_valid_value(field)), st.sampled_from(_SMALL_EDGES), anything]
    if field.choices:
        options.append(st.sampled_from(field.choices))
    if field.item_fields:
        items = st.fixed_dictionaries(
            {},
            optional={item.name: _value(item) for item in field.item_fields} | {"extra": anything},
        )
        options.append(st.lists(items, max_size=3))
    return st.one_of(options)


_IDS = st.sampled_from(["r-1", "r 1", "", "r-1\n", "a" * 129]) | st.text()


@st.composite
def _records(draw: st.DrawFn) -> tuple[Area, Any]:
    """A record of some area, every field valid or absent but (mostly) one, drawn from
    anything: a record with many odd fields says nothing about any one of them."""
    spec = draw(st.sampled_from(sorted(CATALOGUE.values(), key=lambda a: a.name)))
    odd = draw(st.sampled_from([None, *spec.fields]))
    record: dict[str, Any] = {"id": draw(_IDS) if odd is None else "r-1"}
    for field in spec.fields:
        if field is odd:
            record[field.name] = draw(_value(field))
        elif draw(st.booleans()):
            record[field.name] = _valid_value(field)
    return spec, record


@settings(max_examples=1500, deadline=None)
@given(_records())
def test_random_records_it_passes_are_valid(drawn: tuple[Area, Any]) -> None:
    spec, record = drawn
    try:
        record = _as_json(record)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate: no upload can carry it
        return
    _agrees(spec, record)
    if record_passes(spec, record):
        assert record_is_valid(spec, record), record


def test_a_batch_passes_only_whole() -> None:
    spec = get_area("students.basic")
    good = [{"id": f"s-{n}", "forename": "Amara", "on_roll": True} for n in range(50)]
    assert records_pass(spec, good)
    assert records_pass(spec, [])
    assert not records_pass(spec, [*good, {"id": "s-x", "forename": 7}])
    assert not records_pass(spec, [*good, "not a record"])


def test_photos_are_checked_as_base64_afterwards() -> None:
    spec = get_area("students.photos")
    photo = base64.b64encode(b"\xff\xd8 a photo").decode()
    assert records_pass(spec, [{"id": "s-1", "photo": photo}])
    assert not records_pass(spec, [{"id": "s-1", "photo": photo[:-1] + "!"}])
    assert not record_is_valid(spec, {"id": "s-1", "photo": photo[:-1] + "!"})


def _upload(records: list[Any]) -> list[dict[str, Any]]:
    body = orjson.dumps(
        {
            "batch_id": "8d7c7e0e-3a4b-4c55-9a55-0f1e2d3c4b5a",
            "area": "students.basic",
            "mode": "full",
            "extracted_at": "2026-11-01T02:00:00Z",
            "records": records,
        }
    )
    return parse_upload(body, datetime(2026, 11, 1, 3, tzinfo=UTC)).records


def test_an_upload_it_refuses_is_decided_by_the_python_checks() -> None:
    # A date only `date.fromisoformat` reads: refused in C, accepted as before.
    week_date = {"id": "s-1", "date_of_birth": "2013-W15-2"}
    assert not records_pass(get_area("students.basic"), [week_date])
    assert _upload([week_date]) == [week_date]
    # A duplicate id among valid records: C passes the batch, and the ids are still counted.
    with pytest.raises(UploadRejectedError) as refused:
        _upload([{"id": "s-1"}, {"id": "s-2"}, {"id": "s-1"}])
    assert "duplicate id" in refused.value.detail
    with pytest.raises(UploadRejectedError) as refused:
        _upload([{"id": "s-1"}, {"id": "s-2", "forename": 7}, {"id": "s-3", "on_roll": "y"}])
    assert refused.value.detail.startswith("2 problem(s); first: record 1 (s-2) field 'forename'")


class _Name(str):
    pass


@pytest.mark.parametrize(
    ("record", "kept"),
    [
        # What msgspec takes from Python for another JSON type is refused as before...
        ({"id": "s-1", "date_of_birth": date(2013, 4, 9)}, False),
        ({"id": "s-1", "forename": decimal.Decimal("1")}, False),
        (collections.OrderedDict(id="s-1", forename="Amara"), True),  # a dict, as before
        ({"id": "s-1", "forename": _Name("Amara")}, True),  # a str, as before
        ({"id": "s-1", "forename": "Amara", "on_roll": 1}, False),
    ],
)
def test_the_agent_keeps_its_python_answers(record: dict[str, Any], kept: bool) -> None:
    checked = check("students.basic", [record], batch_limit=10_000)
    assert (checked.good == [record]) is kept
    if kept:
        assert checked.encoded == [orjson.dumps(record, option=orjson.OPT_SORT_KEYS)]


def test_the_agent_sends_a_tuple_as_the_list_it_holds() -> None:
    """The one Python leniency left (record_passes): the broker gets a list and accepts it."""
    spec = get_area("groups")
    field = next(f for f in spec.fields if f.type is FieldType.STRING_LIST)
    record = {"id": "g-1", field.name: ("s-1", "s-2")}
    assert not record_is_valid(spec, record)  # Python's answer: not a list
    checked = check("groups", [record], batch_limit=10_000)
    assert checked.good == [record]
    assert records_pass(spec, [orjson.loads(checked.encoded[0])])
