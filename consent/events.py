"""Consent events: the stored history from which every consent decision is derived.

A consent is event-sourced: the service appends one of these per admin action and never
updates or deletes them.  The engine folds a consent's events into a timeline.  Derived
facts (a suspension expiring after 30 days, a grace window ending) are never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Granted(_Event):
    partner_id: str
    school_id: str
    areas: frozenset[str]
    mode: Mode = "read"

    def __post_init__(self) -> None:
        _Event.__post_init__(self)
        object.__setattr__(self, "areas", frozenset(self.areas))


@dataclass(frozen=True, slots=True, kw_only=True)
class AreasChanged(_Event):
    """The new full set of areas; removed areas are revoked, added ones start at `at`."""

    areas: frozenset[str]

    def __post_init__(self) -> None:
        _Event.__post_init__(self)
        object.__setattr__(self, "areas", frozenset(self.areas))


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


ConsentEvent: TypeAlias = Granted | AreasChanged | Revoked | Suspended | Resumed

_TYPES: Mapping[str, type[ConsentEvent]] = {
    "granted": Granted,
    "areas_changed": AreasChanged,
    "revoked": Revoked,
    "suspended": Suspended,
    "resumed": Resumed,
}
_NAMES: Mapping[type[ConsentEvent], str] = {cls: name for name, cls in _TYPES.items()}


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


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
