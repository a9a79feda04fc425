"""SQL of consents and their event store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from consent.engine import ConsentTimeline, fold
from consent.events import ConsentEvent, from_dict, to_dict
from consent.models import AuditEvent, Consent, ConsentEventRow


def live_key(school_id: str, partner_id: str) -> str:
    return f"{school_id}:{partner_id}"


class ConsentRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, consent_id: str, *, for_update: bool = False) -> Consent | None:
        stmt = select(Consent).where(Consent.id == consent_id)
        if for_update:
            self._write_lock()
            # PostgreSQL's row lock (SQLite's is taken above); the row as it is now, even if
            # this session loaded it before the lock.
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return self.session.exec(stmt).first()

    def _write_lock(self) -> None:
        """On SQLite, take the database's write lock now, before the reads a change rests on.

        pysqlite opens a transaction only at the first write, so two changes would both read
        the same last sequence number and the second would fail on the duplicate (or on a
        stale WAL snapshot, "database is locked", which no busy timeout waits out).
        `BEGIN IMMEDIATE` waits (busy_timeout) for the other writer and then reads its
        result.  A unit of work that has written already holds the lock.
        """
        conn = self.session.connection()
        if conn.dialect.name != "sqlite":
            return
        if not conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def for_school(self, school_id: str) -> Sequence[Consent]:
        stmt = (
            select(Consent)
            .where(Consent.school_id == school_id)
            .order_by(col(Consent.granted_at).desc(), col(Consent.id).desc())
        )
        return self.session.exec(stmt).all()

    def for_pair(self, school_id: str, partner_id: str) -> Sequence[Consent]:
        stmt = (
            select(Consent)
            .where(Consent.school_id == school_id, Consent.partner_id == partner_id)
            .order_by(col(Consent.granted_at), col(Consent.id))
        )
        return self.session.exec(stmt).all()

    def live_for_pair(self, school_id: str, partner_id: str) -> Consent | None:
        self._write_lock()
        stmt = select(Consent).where(Consent.live_key == live_key(school_id, partner_id))
        return self.session.exec(stmt.with_for_update()).first()

    def add(self, consent: Consent, event: ConsentEvent) -> None:
        self.session.add(consent)
        self.session.flush()  # the live-key race surfaces here, inside the unit of work
        self._add_event(consent.id, 1, event)

    def append(self, consent: Consent, event: ConsentEvent) -> int:
        """Append the next event; a concurrent writer of the same seq fails the flush."""
        seq = consent.last_seq + 1
        self._add_event(consent.id, seq, event)
        consent.last_seq = seq
        self.session.add(consent)
        self.session.flush()
        return seq

    def _add_event(self, consent_id: str, seq: int, event: ConsentEvent) -> None:
        payload = to_dict(event)
        row = ConsentEventRow(
            consent_id=consent_id,
            seq=seq,
            type=payload["type"],
            at=event.at,
            actor=event.actor,
            reason=event.reason,
            payload=payload,
        )
        self.session.add(row)
        self.session.flush()

    def event_rows(self, consent_id: str) -> Sequence[ConsentEventRow]:
        stmt = (
            select(ConsentEventRow)
            .where(ConsentEventRow.consent_id == consent_id)
            .order_by(col(ConsentEventRow.seq))
        )
        return self.session.exec(stmt).all()

    def events(self, consent_id: str) -> list[ConsentEvent]:
        return [from_dict(row.payload) for row in self.event_rows(consent_id)]

    def events_of(self, consent_ids: Iterable[str]) -> dict[str, list[ConsentEvent]]:
        """The events of many consents in one query, each list in seq order."""
        ids = list(consent_ids)
        out: dict[str, list[ConsentEvent]] = defaultdict(list)
        if not ids:
            return out
        stmt = (
            select(ConsentEventRow)
            .where(col(ConsentEventRow.consent_id).in_(ids))
            .order_by(col(ConsentEventRow.consent_id), col(ConsentEventRow.seq))
        )
        for row in self.session.exec(stmt):
            out[row.consent_id].append(from_dict(row.payload))
        return out

    def timelines(
        self, school_id: str, partner_id: str, grace: timedelta
    ) -> tuple[ConsentTimeline, ...]:
        """Every consent the partner ever had with the school, folded."""
        consents = self.for_pair(school_id, partner_id)
        events = self.events_of(c.id for c in consents)
        return tuple(fold(events[c.id], grace) for c in consents)

    def ended_unfinalized(self, now: datetime) -> Sequence[Consent]:
        stmt = select(Consent).where(
            col(Consent.finalized_at).is_(None),
            col(Consent.ends_at).is_not(None),
            col(Consent.ends_at) <= now,
        )
        return self.session.exec(stmt.order_by(col(Consent.ends_at))).all()

    def claim_finalization(self, consent_id: str, now: datetime) -> bool:
        """Mark a consent finalised unless someone else already did: exactly one wins."""
        stmt = (
            update(Consent)
            .where(col(Consent.id) == consent_id, col(Consent.finalized_at).is_(None))
            .values(finalized_at=now, live_key=None)
            .execution_options(synchronize_session=False)
        )
        return bool(self.session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    def add_audit(self, event: AuditEvent) -> None:
        self.session.add(event)
        self.session.flush()

    def audit_events(self, action: str | None = None) -> Sequence[AuditEvent]:
        stmt = select(AuditEvent).order_by(col(AuditEvent.id))
        if action is not None:
            stmt = stmt.where(AuditEvent.action == action)
        return self.session.exec(stmt).all()
