"""A partner's request, field by field: parse it, version it, and compare versions.

The document (JSON, or the same structure in TOML) is
`{"areas": {AREA: {"reason": ..., "fields": {FIELD: {"required": bool, "reason": ...}}}}}`.
`--areas` alone makes the same document with every field of those areas required.  Each
`partner add` or `update-request` stores a new version; `partner_area_requests` (areas and
their reasons, which the rest of the broker reads) always mirrors the newest one.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, delete, select

from broker.errors import InvalidInputError, NotFoundError
from broker.partners.models import PartnerAreaRequest, PartnerRequestVersion
from consent.areas import CATALOGUE, SENSITIVE_AREAS, get_area

MAX_REASON_LENGTH = 1000


@dataclass(frozen=True, slots=True)
class FieldRequest:
    name: str
    required: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class AreaRequest:
    area: str
    reason: str | None
    fields: tuple[FieldRequest, ...]

    @property
    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)


@dataclass(frozen=True, slots=True)
class PartnerRequest:
    version: int
    areas: Mapping[str, AreaRequest]

    def requested_fields(self) -> dict[str, dict[str, bool]]:
        """Area -> field -> required: what the consent service checks approvals against."""
        return {a: {f.name: f.required for f in r.fields} for a, r in self.areas.items()}

    def as_document(self) -> dict[str, Any]:
        return {
            "areas": {
                a: {
                    "reason": r.reason,
                    "fields": {
                        f.name: {"required": f.required, "reason": f.reason} for f in r.fields
                    },
                }
                for a, r in self.areas.items()
            }
        }


def from_areas(areas: Sequence[str], reasons: Mapping[str, str]) -> dict[str, Any]:
    """The document `--areas` means: every field of each area required."""
    return {
        "areas": {
            area: {
                "reason": reasons.get(area),
                "fields": {
                    name: {"required": True, "reason": None} for name in get_area(area).field_names
                },
            }
            for area in dict.fromkeys(areas)
        }
    }


def read_request_file(path: Path) -> dict[str, Any]:
    """The document in FILE, JSON or TOML (by suffix, else whichever parses)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    parsers = [_toml, _json] if path.suffix.lower() == ".toml" else [_json, _toml]
    errors = []
    for parse in parsers:
        try:
            data = parse(text)
        except ValueError as exc:
            errors.append(str(exc).splitlines()[0])
            continue
        if not isinstance(data, dict):
            raise InvalidInputError(f"{path}: the request must be an object with 'areas'")
        return data
    raise InvalidInputError(f"{path} is neither JSON nor TOML: {errors[0]}")


def _json(text: str) -> Any:
    return json.loads(text)


def _toml(text: str) -> Any:
    return tomllib.loads(text)


def parse_request(document: Mapping[str, Any], version: int = 0) -> PartnerRequest:
    """Check a request document against the catalogue; anything wrong is one clear line."""
    extra = set(document) - {"areas"}
    if extra:
        raise InvalidInputError(f"unknown request member(s): {', '.join(sorted(extra))}")
    areas = document.get("areas")
    if not isinstance(areas, dict) or not areas:
        raise InvalidInputError("a request names at least one area under 'areas'")
    out: dict[str, AreaRequest] = {}
    for area, body in areas.items():
        if area not in CATALOGUE:
            raise InvalidInputError(f"unknown data area {area!r}")
        if not isinstance(body, dict) or set(body) - {"reason", "fields"}:
            raise InvalidInputError(f"{area}: give 'reason' and 'fields' only")
        reason = _reason(body.get("reason"), area)
        if area in SENSITIVE_AREAS and reason is None:
            raise InvalidInputError(f"sensitive area {area} needs a reason")
        out[area] = AreaRequest(area, reason, _fields(area, body.get("fields")))
    return PartnerRequest(version, out)


def _fields(area: str, value: Any) -> tuple[FieldRequest, ...]:
    if not isinstance(value, dict) or not value:
        raise InvalidInputError(f"{area}: 'fields' must name at least one field")
    known = get_area(area).field_index
    out = []
    for name, spec in value.items():
        if name not in known:
            raise InvalidInputError(f"{area} has no field {name!r}")
        if not isinstance(spec, dict) or set(spec) - {"required", "reason"}:
            raise InvalidInputError(f"{area}.{name}: give 'required' and 'reason' only")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            raise InvalidInputError(f"{area}.{name}: 'required' is true or false")
        out.append(FieldRequest(name, required, _reason(spec.get("reason"), f"{area}.{name}")))
    return tuple(sorted(out, key=lambda f: list(known).index(f.name)))


def _reason(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON_LENGTH:
        raise InvalidInputError(f"reason for {where} must be 1-{MAX_REASON_LENGTH} characters")
    return value.strip()


class RequestVersions:
    def __init__(self, session: Session) -> None:
        self.session = session

    def current(self, partner_id: str) -> PartnerRequest:
        """The newest version; a partner from before versions is its areas, all required."""
        row = self.session.exec(
            select(PartnerRequestVersion)
            .where(PartnerRequestVersion.partner_id == partner_id)
            .order_by(col(PartnerRequestVersion.version).desc())
        ).first()
        if row is not None:
            return parse_request(row.request, row.version)
        return self._legacy(partner_id)

    def at(self, partner_id: str, version: int | None) -> PartnerRequest:
        """The version a consent reviewed (None: granted before versions, so the first)."""
        row = None
        if version is not None:
            row = self.session.get(PartnerRequestVersion, (partner_id, version))
        else:
            row = self.session.exec(
                select(PartnerRequestVersion)
                .where(PartnerRequestVersion.partner_id == partner_id)
                .order_by(col(PartnerRequestVersion.version))
            ).first()
        if row is None:
            return self._legacy(partner_id)
        return parse_request(row.request, row.version)

    def _legacy(self, partner_id: str) -> PartnerRequest:
        rows = self.session.exec(
            select(PartnerAreaRequest).where(PartnerAreaRequest.partner_id == partner_id)
        ).all()
        if not rows:
            raise NotFoundError(f"no partner {partner_id!r}")
        reasons = {r.area: r.reason for r in rows if r.reason}
        return parse_request(from_areas([r.area for r in rows], reasons), 1)

    def add(self, partner_id: str, document: Mapping[str, Any], now: datetime) -> PartnerRequest:
        """Store a new version and mirror its areas; returns it (checked)."""
        parsed = parse_request(document)
        latest = self.session.exec(
            select(PartnerRequestVersion.version)
            .where(PartnerRequestVersion.partner_id == partner_id)
            .order_by(col(PartnerRequestVersion.version).desc())
        ).first()
        version = (latest or 0) + 1
        request = PartnerRequest(version, parsed.areas)
        self.session.add(
            PartnerRequestVersion(
                partner_id=partner_id,
                version=version,
                created_at=now,
                request=request.as_document(),
            )
        )
        self.session.exec(
            delete(PartnerAreaRequest).where(col(PartnerAreaRequest.partner_id) == partner_id)
        )
        self.session.add_all(
            PartnerAreaRequest(partner_id=partner_id, area=a, reason=r.reason)
            for a, r in request.areas.items()
        )
        self.session.flush()
        return request


def pending(current: PartnerRequest, reviewed: PartnerRequest) -> dict[str, list[str]]:
    """What `current` asks for beyond the reviewed version: area -> new fields (an area new
    altogether lists all its fields)."""
    out: dict[str, list[str]] = {}
    for area, request in current.areas.items():
        before = reviewed.areas.get(area)
        known = frozenset() if before is None else before.field_names
        new = [f.name for f in request.fields if f.name not in known]
        if new:
            out[area] = new
    return out
