"""The catalogue's areas as msgspec types: a batch of uploaded records checked in C.

The broker checks every record of every upload before it accepts it, and the agent before
it sends it.  In Python (`record_is_valid`, a call per field) that was 5 us a record on
each side, a seventh of the broker's CPU for a full upload; msgspec checks a batch against
its area's type in half that.

It is only ever a quicker yes.  A batch it accepts is one that `record_is_valid` accepts
record by record (tests/consent/test_record_types.py holds the two to that on edge and
random values).  When it refuses, the caller asks `record_is_valid` and `validate_record`,
whose answers and messages stay the reference: a date `fromisoformat` reads but msgspec
does not ("2025-W01-1") is still accepted, by the slower path.  Kinds msgspec cannot
express exactly (base64 binaries, RFC 3339 instants) are left open in the type and checked
in Python afterwards, field by field.

`records_pass` takes only values parsed from JSON: msgspec converting Python objects is
more lenient than the catalogue (a tuple for a list, a `date` for a date string).
`record_passes` takes a record built in Python, with what its caller must do about that.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from consent.areas import (
    MAX_LIST_ITEMS,
    MAX_STRING_LENGTH,
    RECORD_ID_PATTERN,
    TIME_PATTERN,
    Area,
    Check,
    FieldSpec,
    FieldType,
    field_check,
)

_STRING = Annotated[str, Meta(max_length=MAX_STRING_LENGTH)]
# JSON has no infinities or NaN, but a float past the largest finite one parses as one.
_FINITE = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
_RECORD_ID = Annotated[str, Meta(pattern=RECORD_ID_PATTERN)]  # searched with Python's `re`

# Field kinds whose rules a msgspec type states exactly, for values parsed from JSON:
# `float` takes integers, as NUMBER does; `int` refuses booleans and floats, as INTEGER does.
_EXACT: dict[FieldType, Any] = {
    FieldType.STRING: _STRING,
    FieldType.BOOLEAN: bool,
    FieldType.INTEGER: int,
    FieldType.NUMBER: _FINITE,
    FieldType.DATE: date,  # YYYY-MM-DD only, a real day
    FieldType.TIME: Annotated[str, Meta(pattern=TIME_PATTERN)],
    FieldType.STRING_LIST: Annotated[list[_STRING], Meta(max_length=MAX_LIST_ITEMS)],
}


def _value_type(spec: FieldSpec) -> Any | None:
    """The msgspec type stating `spec`'s rules exactly (null allowed), or None."""
    if spec.type is FieldType.STRING and spec.choices is not None:
        return Literal[spec.choices] | None
    exact = _EXACT.get(spec.type)
    if exact is not None:
        return exact | None
    if spec.type is FieldType.OBJECT_LIST:
        item_types = [(item, _value_type(item)) for item in spec.item_fields]
        if any(t is None for _, t in item_types):
            return None
        item = msgspec.defstruct(
            f"Item_{spec.name}",
            [(item.name, t, None) for item, t in item_types],
            forbid_unknown_fields=True,
            gc=False,
        )
        return Annotated[list[item], Meta(max_length=MAX_LIST_ITEMS)] | None  # type: ignore[valid-type]
    return None


@dataclass(frozen=True, slots=True)
class _AreaType:
    record: Any  # the area's record struct
    batch: Any  # a list of them
    # Fields no msgspec type states exactly: open in the struct, checked here afterwards.
    afterwards: tuple[tuple[str, Check], ...]


@functools.cache
def _area_type(area: Area) -> _AreaType:
    fields: list[tuple[str, Any, Any]] = []
    afterwards: list[tuple[str, Check]] = []
    for spec in area.fields:
        exact = _value_type(spec)
        if exact is None:
            afterwards.append((spec.name, field_check(spec)))
        fields.append((spec.name, Any if exact is None else exact, None))
    record = msgspec.defstruct(
        "Record_" + area.name.replace(".", "_"),
        [("id", _RECORD_ID), *fields],
        forbid_unknown_fields=True,
        gc=False,  # made and dropped at once, never in a cycle
    )
    return _AreaType(record, list[record], tuple(afterwards))  # type: ignore[valid-type]


def records_pass(area: Area, records: Sequence[Any]) -> bool:
    """True only if every record is valid for `area`, as `record_is_valid` would say.

    False means at least one may not be: ask `record_is_valid` of each.  `records` must
    be as parsed from JSON (dicts, lists, strings, numbers, booleans, null).
    """
    kind = _area_type(area)
    try:
        checked = msgspec.convert(records, kind.batch)
    except msgspec.ValidationError:
        return False
    return not kind.afterwards or all(_afterwards_pass(kind, record) for record in checked)


def record_passes(area: Area, record: Any) -> bool:
    """`records_pass` for one record built in Python, as an agent's MIS adapter builds it.

    msgspec is more lenient with Python objects than the catalogue: it takes a tuple, a
    set or a frozenset for a list, a `date` for a date, a `Decimal` for a number and a
    dict subclass for an object.  The caller must encode a record this passes with
    orjson's passthrough options for dates, datetimes, subclasses and dataclasses: that
    refuses all of those but the tuple (orjson cannot encode a set or a `Decimal` at all),
    and a tuple is sent as the list it holds, which the broker accepts.
    """
    kind = _area_type(area)
    try:
        checked = msgspec.convert(record, kind.record)
    except msgspec.ValidationError:
        return False
    return _afterwards_pass(kind, checked)


def _afterwards_pass(kind: _AreaType, record: Any) -> bool:
    for name, check in kind.afterwards:  # noqa: SIM110 - a loop: no generator per record
        if check(getattr(record, name)) is not None:
            return False
    return True
