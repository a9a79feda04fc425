"""The consent event store and service on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.clock import FrozenClock
from broker.db import session_scope
from consent.errors import ConsentConflictError, ConsentInvalidError, ConsentNotFoundError
from consent.events import Granted, Revoked, to_dict
from consent.models import Consent, ConsentEventRow, ConsentStatus
from consent.repository import ConsentRepository
from consent.service import ConsentService
from tests.support.consent_db import ConsentDb, consent_db

H = timedelta(hours=1)
GRACE = 72 * H
BASIC, CONTACTS = "students.basic", "contacts"
REQUESTED = (BASIC, CONTACTS)


@pytest.fixture
def db(database_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[ConsentDb]:
    yield from consent_db(database_url, tmp_path, clock)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, kind: str, consent: Consent, payload: dict[str, Any], _: datetime) -> None:
        self.seen.append((kind, consent.id, payload))


def grant(db: ConsentDb, recorder: Recorder | None = None, partner: str = "prt_1") -> str:
    with db.unit() as session:
        service = ConsentService(session, grace=GRACE, on_event=recorder)
        view = service.grant(
            school_id="sch_a",
            partner_id=partner,
            areas=REQUESTED,
            mode="read",
            requested=REQUESTED,
            actor="admin:adm_1",
            now=db.clock.now(),
        )
    return view.consent.id


def revoke(db: ConsentDb, consent_id: str, end_at: datetime) -> None:
    with db.unit() as session:
        ConsentService(session, grace=GRACE).revoke(
            consent_id, school_id="sch_a", end_at=end_at, actor="admin:adm_1", now=db.clock.now()
        )


def test_events_are_stored_in_order_and_read_back_exactly(db: ConsentDb) -> None:
    consent_id = grant(db)
    db.clock.advance(H)
    revoke(db, consent_id, db.clock.now() + H)
    with Session(db.engine) as session:
        repo = ConsentRepository(session)
        events = repo.events(consent_id)
        rows = repo.event_rows(consent_id)
        consent = repo.get(consent_id)
    assert [type(e) for e in events] == [Granted, Revoked]
    assert [(r.seq, r.type, r.actor) for r in rows] == [
        (1, "granted", "admin:adm_1"),
        (2, "revoked", "admin:adm_1"),
    ]
    assert [r.payload for r in rows] == [to_dict(e) for e in events]
    assert events[1].at == db.clock.now()
    assert consent is not None
    assert consent.last_seq == 2
    assert consent.status is ConsentStatus.ENDING
    assert consent.ends_at == db.clock.now() + H


def test_a_seq_is_written_once(db: ConsentDb) -> None:
    consent_id = grant(db)
    with pytest.raises(IntegrityError), session_scope(db.engine) as session:
        session.add(
            ConsentEventRow(
                consent_id=consent_id,
                seq=1,
                type="suspended",
                at=db.clock.now(),
                actor="admin:x",
                payload={"type": "suspended"},
            )
        )


def test_one_live_consent_per_pair_is_a_database_constraint(db: ConsentDb) -> None:
    grant(db)
    with pytest.raises(ConsentConflictError):
        grant(db)
    with Session(db.engine) as session:
        row = session.exec(select(Consent)).one()
    twin = Consent(
        id="con_twin",
        school_id=row.school_id,
        partner_id=row.partner_id,
        mode="read",
        granted_at=row.granted_at,
        granted_by="admin:x",
        status=ConsentStatus.ACTIVE,
        areas=[BASIC],
        updated_at=row.granted_at,
        live_key=row.live_key,
    )
    with pytest.raises(IntegrityError), session_scope(db.engine) as session:
        session.add(twin)
    assert grant(db, partner="prt_2")  # another partner is another pair


def test_rules_are_checked_by_folding_before_anything_is_written(db: ConsentDb) -> None:
    consent_id = grant(db)
    db.clock.advance(-H)  # an event before the grant breaks the history
    with pytest.raises(ConsentInvalidError, match="time order"):
        revoke(db, consent_id, db.clock.now() + H)
    with Session(db.engine) as session:
        assert len(ConsentRepository(session).event_rows(consent_id)) == 1


def test_another_schools_consent_is_not_found(db: ConsentDb) -> None:
    consent_id = grant(db)
    with db.unit() as session, pytest.raises(ConsentNotFoundError):
        ConsentService(session, grace=GRACE).suspend(
            consent_id, school_id="sch_b", reason="x", actor="admin:b", now=db.clock.now()
        )


def test_timelines_hold_every_consent_of_the_pair(db: ConsentDb) -> None:
    first = grant(db)
    revoke(db, first, db.clock.now() + H)
    db.clock.advance(2 * H)
    second = grant(db)
    with Session(db.engine) as session:
        timelines = ConsentRepository(session).timelines("sch_a", "prt_1", GRACE)
        service = ConsentService(session, grace=GRACE)
        now_decision = service.decide_at("sch_a", "prt_1", [BASIC], db.clock.now())
        then_decision = service.decide_at("sch_a", "prt_1", [BASIC], db.clock.now() - 0.5 * H)
    assert [t.consent_id for t in timelines] == [first, second]
    assert (now_decision.allowed, now_decision.consent_id) == (True, second)
    assert (then_decision.allowed, then_decision.reason) == (False, "revoked")


def test_finalize_ended_records_each_end_once(db: ConsentDb) -> None:
    recorder = Recorder()
    consent_id = grant(db)
    revoke(db, consent_id, db.clock.now())  # retrospective: ends after the grace period
    db.clock.advance(GRACE - timedelta(microseconds=1))
    with db.unit() as session:
        assert (
            ConsentService(session, grace=GRACE, on_event=recorder).finalize_ended(db.clock.now())
            == []
        )
    db.clock.advance(timedelta(microseconds=1))
    for _ in range(2):
        with db.unit() as session:
            service = ConsentService(session, grace=GRACE, on_event=recorder)
            service.finalize_ended(db.clock.now())
    assert [(kind, cid) for kind, cid, _ in recorder.seen] == [("consent.ended", consent_id)]
    assert recorder.seen[0][2]["reason"] == "revoked"
    with Session(db.engine) as session:
        row = session.exec(select(Consent).where(col(Consent.id) == consent_id)).one()
    assert row.status is ConsentStatus.REVOKED
    assert row.live_key is None
    assert row.finalized_at == db.clock.now()


def test_every_change_is_reported_for_the_outbox(db: ConsentDb) -> None:
    recorder = Recorder()
    consent_id = grant(db, recorder)
    with db.unit() as session:
        service = ConsentService(session, grace=GRACE, on_event=recorder)
        now = db.clock.now()
        kw: dict[str, Any] = {"school_id": "sch_a", "actor": "admin:adm_1", "now": now}
        service.change_areas(consent_id, areas=[BASIC], requested=REQUESTED, **kw)
        service.suspend(consent_id, reason="breach", **kw)
        service.resume(consent_id, **kw)
        assert service.changed == {("sch_a", "prt_1")}
    assert [kind for kind, _, _ in recorder.seen] == [
        "consent.granted",
        "consent.updated",
        "consent.suspended",
        "consent.resumed",
    ]
    assert recorder.seen[1][2]["ending_areas"] == {CONTACTS: "2026-11-26T09:00:00Z"}
