"""Consent events: the stored history from which every consent decision is derived.

A consent is event-sourced: the service appends one of these per admin action and never
updates or deletes them.  The engine folds a consent's events into a timeline.  Derived
facts (a suspension expiring after 30 days, a grace window ending) are never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from consent.areas import parse_instant

Mode: TypeAlias = Literal["read", "read_write"]
MODES: tuple[Mode, ...] = ("read", "read_write")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    consent_id: str
    at: datetime
    actor: str
    reason: str | None = None

    def __post_init__(self) -> None:
        _require_aware(self.at, "at")


FieldMap: TypeAlias = Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Audience:
    """Which pupils a consent shares: a year-group rule, named pupils in, named pupils out.

    `year_groups` None: no year rule; `include_students` None: no list of named pupils.
    With neither, every pupil is in.  Otherwise a pupil is in when the year rule or the
    list names them.  `exclude_students` always wins.
    """

    year_groups: frozenset[str] | None = None
    include_students: frozenset[str] | None = None
    exclude_students: frozenset[str] = frozenset()

    @property
    def everyone(self) -> bool:
        return (
            self.year_groups is None and self.include_students is None and not self.exclude_students
        )

    def admits(self, student_id: str, year_group: str | None) -> bool:
        if student_id in self.exclude_students:
            return False
        if self.year_groups is None and self.include_students is None:
            return True
        if self.include_students is not None and student_id in self.include_students:
            return True
        return self.year_groups is not None and year_group in self.year_groups

    def as_dict(self) -> dict[str, Any]:
        return {
            "year_groups": _sorted_or_none(self.year_groups),
            "include_students": _sorted_or_none(self.include_students),
            "exclude_students": sorted(self.exclude_students),
        }


EVERYONE: Audience = Audience()


def _sorted_or_none(value: frozenset[str] | None) -> list[str] | None:
    return None if value is None else sorted(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Granted(_Event):
    partner_id: str
    school_id: str
    areas: frozenset[str]
    mode: Mode = "read"
    # Approved fields per area; an area absent (or None: a grant from before field-level
    # approval) shares every field.  `request_version`: the partner request reviewed.
    fields: FieldMap | None = None
    request_version: int | None = None

    def __post_init__(self) -> None:
        _Event.__post_init__(self)
        object.__setattr__(self, "areas", frozenset(self.areas))
        if self.fields is not None:
            object.__setattr__(self, "fields", _field_map(self.fields))


@dataclass(frozen=True, slots=True, kw_only=True)
class AreasChanged(_Event):
    """The new full set of areas; removed areas are revoked, added ones start at `at`."""

    areas: frozenset[str]

    def __post_init__(self) -> None:
        _Event.__post_init__(self)
        object.__setattr__(self, "areas", frozenset(self.areas))


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldsChanged(_Event):
    """The new approved fields of the named areas; a removed field is revoked like an area
    (readable in grace), an added one is shared from `at`."""

    fields: FieldMap
    request_version: int | None = None

    def __post_init__(self) -> None:
        _Event.__post_init__(self)
        object.__setattr__(self, "fields", _field_map(self.fields))


@dataclass(frozen=True, slots=True, kw_only=True)
class AudienceChanged(_Event):
    """The pupils shared from `at` on (no grace: a pupil leaving the view leaves at once)."""

    audience: Audience


@dataclass(frozen=True, slots=True, kw_only=True)
class Revoked(_Event):
    end_at: datetime

    def __post_init__(self) -> None:
        _Event.__post_init__(self)
        _require_aware(self.end_at, "end_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspended(_Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed(_Event):
    pass


ConsentEvent: TypeAlias = (
    Granted | AreasChanged | FieldsChanged | AudienceChanged | Revoked | Suspended | Resumed
)

_TYPES: Mapping[str, type[ConsentEvent]] = {
    "granted": Granted,
    "areas_changed": AreasChanged,
    "fields_changed": FieldsChanged,
    "audience_changed": AudienceChanged,
    "revoked": Revoked,
    "suspended": Suspended,
    "resumed": Resumed,
}
_NAMES: Mapping[type[ConsentEvent], str] = {cls: name for name, cls in _TYPES.items()}


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


def _field_map(value: FieldMap) -> FieldMap:
    return MappingProxyType({a: frozenset(value[a]) for a in sorted(value)})


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, microseconds only when there are any."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_dict(event: ConsentEvent) -> dict[str, Any]:
    """A JSON-ready dict: times as RFC 3339 `Z` strings, areas as a sorted list."""
    out: dict[str, Any] = {
        "type": _NAMES[type(event)],
        "consent_id": event.consent_id,
        "at": format_instant(event.at),
        "actor": event.actor,
        "reason": event.reason,
    }
    if isinstance(event, Granted):
        out |= {"partner_id": event.partner_id, "school_id": event.school_id}
        out |= {"areas": sorted(event.areas), "mode": event.mode}
        if event.fields is not None:
            out |= {"fields": _fields_out(event.fields), "request_version": event.request_version}
    elif isinstance(event, FieldsChanged):
        out |= {"fields": _fields_out(event.fields), "request_version": event.request_version}
    elif isinstance(event, AudienceChanged):
        out["audience"] = event.audience.as_dict()
    elif isinstance(event, AreasChanged):
        out["areas"] = sorted(event.areas)
    elif isinstance(event, Revoked):
        out["end_at"] = format_instant(event.end_at)
    return out


def from_dict(data: Mapping[str, Any]) -> ConsentEvent:
    """Inverse of `to_dict`; anything malformed raises ValueError."""
    try:
        cls = _TYPES[data["type"]]
        fields: dict[str, Any] = {k: v for k, v in data.items() if k != "type"}
        for key in ("at", "end_at"):
            if key in fields:
                fields[key] = _parse(fields[key], key)
        if "areas" in fields:
            fields["areas"] = _parse_areas(fields["areas"])
        if "fields" in fields:
            fields["fields"] = _parse_fields(fields["fields"])
        if "audience" in fields:
            fields["audience"] = parse_audience(fields["audience"])
        if "mode" in fields and fields["mode"] not in MODES:
            raise ValueError(f"unknown mode {fields['mode']!r}")
        return cls(**fields)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed consent event: {exc}") from None


def _parse(value: Any, name: str) -> datetime:
    parsed = parse_instant(value)
    if parsed is None:
        raise ValueError(f"{name} is not an RFC 3339 instant: {value!r}")
    return parsed.astimezone(UTC)


def _parse_areas(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValueError("areas must be a list of strings")
    return frozenset(value)


def _fields_out(value: FieldMap) -> dict[str, list[str]]:
    return {area: sorted(names) for area, names in value.items()}


def _parse_fields(value: Any) -> FieldMap:
    if not isinstance(value, dict):
        raise ValueError("fields must map areas to lists of field names")
    return {area: _parse_areas(names) for area, names in value.items()}


def _parse_ids(value: Any, name: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a list of non-empty strings or null")
    return frozenset(value)


def parse_audience(value: Any) -> Audience:
    """An audience from its JSON form (`Audience.as_dict`); malformed raises ValueError."""
    if not isinstance(value, dict):
        raise ValueError("an audience is an object")
    unknown = set(value) - {"year_groups", "include_students", "exclude_students"}
    if unknown:
        raise ValueError(f"unknown audience member(s): {', '.join(sorted(unknown))}")
    return Audience(
        year_groups=_parse_ids(value.get("year_groups"), "year_groups"),
        include_students=_parse_ids(value.get("include_students"), "include_students"),
        exclude_students=_parse_ids(value.get("exclude_students"), "exclude_students")
        or frozenset(),
    )
