"""Write-back: queue a partner's write, hand it to the school's agent, record the outcome.

Lifecycle: `queued` (sealed payload stored) → `delivered` (the agent fetched it) →
`applied`, `partially_applied` or `failed` (the agent's per-record results).  A queued
write may instead become `expired` (not fetched within the expiry) or `cancelled` (the
school cancelled it, or the consent was revoked, suspended or ended).  A delivered write is
never cancelled or expired: the agent may be applying it, and the MIS is the truth.

Every change of state happens in the caller's transaction with its outbox event, so a
`write.applied` / `write.failed` webhook exists if and only if the change does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from sqlalchemy import and_, bindparam, exists, func, update
from sqlmodel import Session, col, select

from broker.clock import rfc3339
from broker.errors import ConflictError, InvalidInputError, NotFoundError
from broker.events.service import emit
from broker.ids import new_id
from broker.partners.projection import EVERY_PUPIL, Admitted
from broker.schools.models import Agent, School, SchoolStatus
from broker.writes.models import FINISHED_STATUSES, OPEN_STATUSES, Write, WriteStatus
from cache.crypto import Slot, SlotKind, open_json, seal_json
from cache.keys import KeyRing
from cache.models import CachedRecord, table_of
from cache.naming import school_macs
from consent.areas import CATALOGUE, WRITABLE_AREAS, validate_record

# What the MIS needs to place a record: without these an import cannot succeed.
REQUIRED_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "attendance.marks": ("student_id", "date", "session", "mark"),
    "behaviour": ("student_id", "type", "date"),
}
PUPILS_AREA: Final = "students.basic"
MAX_KEY_LENGTH: Final = 200
MAX_ERROR_LENGTH: Final = 500
MAX_OFFERS: Final = 20  # writes named in one heartbeat reply
LIST_LIMIT: Final = 200
RESULT_STATUSES: Final = ("applied", "rejected")


class WriteValidationError(InvalidInputError):
    slug = "invalid-write"
    title = "Invalid write"


class NotWritableError(InvalidInputError):
    slug = "not-writable"
    title = "Not writable"


class IdempotencyConflictError(ConflictError):
    slug = "idempotency-key-reused"
    title = "Idempotency key reused"


class WriteNotFoundError(NotFoundError):
    slug = "write-not-found"
    title = "Write not found"


class WriteGoneError(ConflictError):
    """The agent asked for a write that is no longer to be applied (cancelled, expired)."""

    slug = "write-not-open"
    title = "Write not open"


# -- validation ---------------------------------------------------------------------------


def body_digest(area: str, records: Sequence[Any]) -> str:
    canonical = orjson.dumps({"area": area, "records": records}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise InvalidInputError("the Idempotency-Key header is required")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInputError(f"Idempotency-Key: at most {MAX_KEY_LENGTH} printable characters")
    return key


def check_writable(area: str) -> None:
    if area not in CATALOGUE:
        raise NotFoundError(f"no data area {area!r}: see GET /openapi.json or `misbroker areas`")
    if area not in WRITABLE_AREAS:
        writable = ", ".join(sorted(WRITABLE_AREAS))
        raise NotWritableError(f"{area} is not writable; writable areas: {writable}")


def _invalid(index: int, field: str, message: str) -> WriteValidationError:
    return WriteValidationError(
        f"record {index}, field {field!r}: {message}",
        errors=[{"index": index, "field": field, "message": message}],
    )


def validate_records(
    session: Session,
    keyring: KeyRing,
    school_id: str,
    area: str,
    body: Any,
    max_records: int,
    admitted: Admitted = EVERY_PUPIL,
) -> list[dict[str, Any]]:
    """The records of a write body, or a 422 naming the first bad record index and field."""
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) != {"records"} or not isinstance(records, list):
        raise WriteValidationError('the body must be {"records": [...]}', errors=[])
    if not records or len(records) > max_records:
        raise WriteValidationError(f"a write holds 1-{max_records} records", errors=[])
    spec = CATALOGUE[area]
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise _invalid(index, "", "expected an object")
        if "id" in record:
            raise _invalid(index, "id", "the MIS assigns ids: leave id out")
        # The catalogue's checks, with a placeholder id (the MIS assigns the real one).
        for problem in validate_record(spec, index, {"id": "new", **record}):
            raise _invalid(index, problem.field, problem.message)
        for name in REQUIRED_FIELDS.get(area, ()):
            if record.get(name) is None:
                raise _invalid(index, name, "required")
    _check_students(session, keyring, school_id, records, admitted)
    return records


def _check_students(
    session: Session,
    keyring: KeyRing,
    school_id: str,
    records: Sequence[dict[str, Any]],
    admitted: Admitted,
) -> None:
    """Every student id must be a pupil the broker holds for the school (by keyed digest:
    record ids are stored only as HMACs) and one in the partner's view.  A pupil outside the
    view gets the same answer as one who does not exist: the refusal must not tell the
    partner that the pupil is there."""
    macs = school_macs(keyring, school_id)
    wanted = {str(r["student_id"]) for r in records}
    keys = {macs.record_key(s): s for s in wanted}
    found: set[str] = set()
    for chunk in _chunks(sorted(keys), 500):
        stmt = select(CachedRecord.record_key).where(
            CachedRecord.school_id == school_id,
            CachedRecord.area == PUPILS_AREA,
            col(CachedRecord.record_key).in_(chunk),
            col(CachedRecord.deleted).is_(False),
        )
        found.update(session.exec(stmt).all())
    for index, record in enumerate(records):
        student_id = str(record["student_id"])
        if macs.record_key(student_id) not in found or not admitted.admits(student_id):
            raise _invalid(index, "student_id", "no such pupil at this school")


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def agent_can_write(session: Session, school_id: str, area: str) -> bool:
    """Whether a live agent of the school said (in its heartbeat) that it can apply `area`."""
    agents = session.exec(
        select(Agent).where(Agent.school_id == school_id, col(Agent.revoked_at).is_(None))
    ).all()
    for agent in agents:
        capabilities = (agent.telemetry or {}).get("capabilities")
        if isinstance(capabilities, dict):
            areas = capabilities.get("write_areas")
            if isinstance(areas, list) and area in areas:
                return True
    return False


def active_school(session: Session, school_id: str) -> School:
    school = session.get(School, school_id)
    if school is None or school.status is not SchoolStatus.ACTIVE:
        raise NotFoundError(f"no school {school_id!r}")
    return school


# -- queueing -----------------------------------------------------------------------------


def _slot(write: Write) -> Slot:
    return Slot(write.school_id, write.area, f"write:{write.id}", 0, SlotKind.RECORD)


def find_by_key(session: Session, partner_id: str, key: str) -> Write | None:
    stmt = select(Write).where(Write.partner_id == partner_id, Write.idempotency_key == key)
    return session.exec(stmt).first()


def replay(write: Write, area: str, digest: str) -> Write:
    """The earlier write of this key, if the request is the same; else 409."""
    if write.body_digest != digest or write.area != area:
        raise IdempotencyConflictError(
            "this Idempotency-Key was used with another body: use a new key for a new write"
        )
    return write


def queue_write(
    session: Session,
    keyring: KeyRing,
    *,
    school_id: str,
    partner_id: str,
    consent_id: str | None,
    area: str,
    key: str,
    digest: str,
    records: list[dict[str, Any]],
    now: datetime,
    expire_after: timedelta,
) -> Write:
    write = Write(
        id=new_id("wrt"),
        school_id=school_id,
        partner_id=partner_id,
        consent_id=consent_id,
        area=area,
        idempotency_key=key,
        body_digest=digest,
        count=len(records),
        created_at=now,
        updated_at=now,
        expires_at=now + expire_after,
    )
    write.payload_sealed = seal_json(keyring, _slot(write), records)
    session.add(write)
    session.flush()
    return write


# -- views --------------------------------------------------------------------------------


def accepted_view(write: Write) -> dict[str, Any]:
    """The 202 answer (the same for a replay of the same key and body)."""
    return {"write_id": write.id, "status": "queued", "area": write.area, "count": write.count}


def write_view(write: Write) -> dict[str, Any]:
    return {
        "write_id": write.id,
        "school_id": write.school_id,
        "area": write.area,
        "status": write.status.value,
        "reason": write.reason,
        "count": write.count,
        "created_at": rfc3339(write.created_at),
        "updated_at": rfc3339(write.updated_at),
        "results": write.results or [],
    }


def admin_view(write: Write, partner_name: str | None) -> dict[str, Any]:
    return {
        **write_view(write),
        "partner_id": write.partner_id,
        "partner_name": partner_name,
        "expires_at": rfc3339(write.expires_at),
        "delivered_at": rfc3339(write.delivered_at) if write.delivered_at else None,
        "finished_at": rfc3339(write.finished_at) if write.finished_at else None,
        "payload_purged": write.purged_at is not None,
        "cancelled_by": write.cancelled_by,
    }


def partner_write(session: Session, partner_id: str, write_id: str) -> Write:
    write = session.get(Write, write_id)
    if write is None or write.partner_id != partner_id:
        raise WriteNotFoundError(f"no write {write_id!r} of yours")
    return write


def list_writes(
    session: Session,
    *,
    partner_id: str | None = None,
    school_id: str | None = None,
    status: str | None = None,
    limit: int = LIST_LIMIT,
) -> Sequence[Write]:
    stmt = select(Write)
    if partner_id is not None:
        stmt = stmt.where(Write.partner_id == partner_id)
    if school_id is not None:
        stmt = stmt.where(Write.school_id == school_id)
    if status is not None:
        try:
            stmt = stmt.where(Write.status == WriteStatus(status))
        except ValueError:
            known = ", ".join(s.value for s in WriteStatus)
            raise InvalidInputError(f"status must be one of {known}") from None
    stmt = stmt.order_by(col(Write.created_at).desc(), col(Write.id).desc()).limit(limit)
    return session.exec(stmt).all()


# -- endings ------------------------------------------------------------------------------


def _finish(
    session: Session,
    write: Write,
    status: WriteStatus,
    now: datetime,
    reason: str | None = None,
) -> None:
    write.status = status
    write.reason = reason
    write.updated_at = now
    write.finished_at = now
    session.add(write)
    payload: dict[str, Any] = {
        "write_id": write.id,
        "area": write.area,
        "status": status.value,
        "count": write.count,
        "results": write.results or [],
    }
    if status in (WriteStatus.APPLIED, WriteStatus.PARTIALLY_APPLIED):
        kind = "write.applied"
    else:
        kind = "write.failed"
        payload["reason"] = reason
    emit(session, kind, school_id=write.school_id, partner_id=write.partner_id,
         area=write.area, payload=payload, now=now)  # fmt: skip


def expire_due(session: Session, now: datetime, school_id: str | None = None) -> int:
    """Queued writes past their expiry become `expired`, each with a `write.failed`."""
    stmt = select(Write).where(Write.status == WriteStatus.QUEUED, col(Write.expires_at) <= now)
    if school_id is not None:
        stmt = stmt.where(Write.school_id == school_id)
    expired = session.exec(stmt).all()
    for write in expired:
        _finish(session, write, WriteStatus.EXPIRED, now, "expired")
    return len(expired)


def cancel_for_consent(session: Session, school_id: str, partner_id: str, now: datetime) -> int:
    """The consent was revoked, suspended or ended: its queued writes are cancelled."""
    stmt = select(Write).where(
        Write.school_id == school_id,
        Write.partner_id == partner_id,
        Write.status == WriteStatus.QUEUED,
    )
    writes = session.exec(stmt).all()
    for write in writes:
        write.cancelled_by = "consent"
        _finish(session, write, WriteStatus.CANCELLED, now, "cancelled")
    return len(writes)


def cancel_by_school(
    session: Session, school_id: str, write_id: str, actor: str, now: datetime
) -> Write:
    write = session.get(Write, write_id)
    if write is None or write.school_id != school_id:
        raise WriteNotFoundError(f"no write {write_id!r} at this school")
    if write.status is not WriteStatus.QUEUED:
        raise ConflictError(
            f"write {write_id} is {write.status.value}: only a queued write can be cancelled"
        )
    write.cancelled_by = actor[:200]
    _finish(session, write, WriteStatus.CANCELLED, now, "cancelled")
    return write


def purge_finished(session: Session, now: datetime, purge_after: timedelta) -> int:
    """Drop the payload of writes finished `purge_after` ago; status and results remain."""
    result = session.execute(
        update(Write)
        .where(
            col(Write.status).in_(FINISHED_STATUSES),
            col(Write.finished_at) <= now - purge_after,
            col(Write.payload_sealed).is_not(None),
        )
        .values(payload_sealed=None, purged_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# -- the agent's side ---------------------------------------------------------------------


_WRITES = table_of(Write)
_OPEN_AT_SCHOOL = and_(
    _WRITES.c.school_id == bindparam("school_id"), _WRITES.c.status.in_(OPEN_STATUSES)
)
# Whether `offers` has anything to hand the school's agent (bind `school_id`).  A write due
# to expire is queued, so open: with none open, none needs expiring either.
ANY_OPEN: Final = exists().where(_OPEN_AT_SCHOOL)
# Asked by each heartbeat that finds a write open: statements built once, read as rows, and
# the ORM only when a write is due to expire (it writes an event).
_ANY_DUE_FOR_EXPIRY = (
    select(_WRITES.c.id)
    .where(
        _WRITES.c.school_id == bindparam("school_id"),
        _WRITES.c.status == WriteStatus.QUEUED,
        _WRITES.c.expires_at <= bindparam("now"),
    )
    .limit(1)
)
_OPEN_OFFERS = (
    select(_WRITES.c.id, _WRITES.c.area, _WRITES.c.count)
    .where(_OPEN_AT_SCHOOL)
    .order_by(_WRITES.c.created_at, _WRITES.c.id)
    .limit(MAX_OFFERS)
)


def offers(session: Session, school_id: str, now: datetime) -> list[dict[str, Any]]:
    """The writes to name in a heartbeat reply: queued ones, and delivered ones without
    results (the agent may have crashed mid-apply; its journal says what it applied)."""
    conn = session.connection()
    if conn.execute(_ANY_DUE_FOR_EXPIRY, {"school_id": school_id, "now": now}).first():
        expire_due(session, now, school_id)
        session.flush()  # the offers below are read past the ORM: they must see the expiries
    rows = conn.execute(_OPEN_OFFERS, {"school_id": school_id})
    return [{"write_id": row.id, "area": row.area, "count": row.count} for row in rows]


def deliver(
    session: Session, keyring: KeyRing, school_id: str, write_id: str, now: datetime
) -> dict[str, Any]:
    """The write's records for the agent (opened here: the agent has no data key), marking
    it delivered.  A write no longer open answers 409 and must not be applied."""
    expire_due(session, now, school_id)
    write = session.get(Write, write_id, with_for_update=True)
    if write is None or write.school_id != school_id:
        raise WriteNotFoundError(f"no write {write_id!r} for this agent")
    if write.status not in OPEN_STATUSES or write.payload_sealed is None:
        raise WriteGoneError(f"write {write_id} is {write.status.value}: do not apply it")
    if write.status is WriteStatus.QUEUED:
        write.status = WriteStatus.DELIVERED
        write.delivered_at = now
        write.updated_at = now
        session.add(write)
    records = open_json(keyring, _slot(write), write.payload_sealed)
    return {"write_id": write.id, "area": write.area, "records": records}


def record_results(
    session: Session, school_id: str, write_id: str, results: list[dict[str, Any]], now: datetime
) -> Write:
    """The agent's per-record results; a repeat of the same results changes nothing."""
    write = session.get(Write, write_id, with_for_update=True)
    if write is None or write.school_id != school_id:
        raise WriteNotFoundError(f"no write {write_id!r} for this agent")
    cleaned = _clean_results(write, results)
    if write.status in FINISHED_STATUSES:
        if write.results == cleaned:
            return write  # a retried report
        raise ConflictError(f"write {write_id} already finished as {write.status.value}")
    if write.status is not WriteStatus.DELIVERED:
        raise ConflictError(f"write {write_id} was never fetched: fetch it first")
    write.results = cleaned
    applied = sum(1 for r in cleaned if r["status"] == "applied")
    if applied == len(cleaned):
        _finish(session, write, WriteStatus.APPLIED, now)
    elif applied:
        _finish(session, write, WriteStatus.PARTIALLY_APPLIED, now)
    else:
        _finish(session, write, WriteStatus.FAILED, now, "rejected")
    return write


def _clean_results(write: Write, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_index: dict[int, dict[str, Any]] = {}
    for item in results:
        index = item.get("index")
        status = item.get("status")
        if not isinstance(index, int) or not 0 <= index < write.count or index in by_index:
            raise InvalidInputError(f"results: bad or repeated index {index!r}")
        if status not in RESULT_STATUSES:
            raise InvalidInputError(f"results[{index}].status: applied or rejected")
        mis_id, error = item.get("mis_id"), item.get("error")
        by_index[index] = {
            "index": index,
            "status": status,
            "mis_id": str(mis_id)[:128] if mis_id is not None else None,
            "error": str(error)[:MAX_ERROR_LENGTH] if error is not None else None,
        }
    if len(by_index) != write.count:
        raise InvalidInputError(f"results: expected one per record ({write.count})")
    return [by_index[i] for i in range(write.count)]


def open_count(session: Session, school_id: str) -> int:
    stmt = (
        select(func.count())
        .select_from(Write)
        .where(Write.school_id == school_id, col(Write.status).in_(OPEN_STATUSES))
    )
    return int(session.exec(stmt).one())
