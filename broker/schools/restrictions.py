"""Restricted pupils: a pupil whose data goes to no partner at all (e.g. safeguarding).

A school's restrictions are one row, sealed with the school's data key: pupil ids and the
reasons never reach the database in clear.  A change bumps `version`; the partner read
path narrows every pupil-linked area by them (`broker.partners.projection`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.clock import rfc3339
from broker.errors import InvalidInputError, NotFoundError
from broker.schools.models import StudentRestrictions
from cache.crypto import Slot, open_json, seal_json
from cache.keys import KeyRing
from consent.areas import is_valid_record_id

MAX_REASON_LENGTH = 1000


def _slot(school_id: str) -> Slot:
    return Slot(school_id, "students.basic", "restrictions", 0)


def load(
    session: Session, keyring: KeyRing, school_id: str
) -> tuple[int, dict[str, dict[str, Any]]]:
    """(version, pupil id -> {"reason", "at"}); version 0 and {} when there are none."""
    row = session.get(StudentRestrictions, school_id)
    if row is None:
        return 0, {}
    value = open_json(keyring, _slot(school_id), row.sealed)
    return row.version, dict(value)


def _store(
    session: Session,
    keyring: KeyRing,
    school_id: str,
    restricted: Mapping[str, Any],
    now: datetime,
) -> int:
    row = session.get(StudentRestrictions, school_id, with_for_update=True)
    sealed = seal_json(keyring, _slot(school_id), dict(restricted))
    if row is None:
        row = StudentRestrictions(school_id=school_id, sealed=sealed, version=1, updated_at=now)
    else:
        row.sealed, row.version, row.updated_at = sealed, row.version + 1, now
    session.add(row)
    session.flush()
    return row.version


def restrict(
    session: Session,
    keyring: KeyRing,
    *,
    school_id: str,
    student_id: str,
    reason: str,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    if not is_valid_record_id(student_id):
        raise InvalidInputError(f"{student_id!r} is not a pupil id")
    text = (reason or "").strip()
    if not text or len(text) > MAX_REASON_LENGTH:
        raise InvalidInputError(f"a restriction needs a reason of 1-{MAX_REASON_LENGTH} characters")
    _, restricted = load(session, keyring, school_id)
    entry = {"reason": text, "at": rfc3339(now), "by": actor}
    restricted[student_id] = entry
    _store(session, keyring, school_id, restricted, now)
    return {"student_id": student_id, "restricted": True, "reason": text, "at": entry["at"]}


def lift(
    session: Session, keyring: KeyRing, *, school_id: str, student_id: str, now: datetime
) -> None:
    _, restricted = load(session, keyring, school_id)
    if restricted.pop(student_id, None) is None:
        raise NotFoundError(f"pupil {student_id!r} is not restricted")
    _store(session, keyring, school_id, restricted, now)
