"""A migrated database with schools and partners, for the consent context's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from broker.clock import FrozenClock
from broker.db import make_engine, session_scope, upgrade
from broker.partners.models import Partner
from broker.schools.models import School
from broker.sealing import KekSealer
from cache.keys import LocalKeyProvider
from consent.audit_keys import AuditKeyring

SCHOOLS = ("sch_a", "sch_b", "sch_c")
PARTNERS = ("prt_1", "prt_2")


@dataclass
class ConsentDb:
    engine: Engine
    clock: FrozenClock
    keyring: AuditKeyring
    sealer: KekSealer

    def unit(self) -> AbstractContextManager[Session]:
        return session_scope(self.engine)


def consent_db(url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[ConsentDb]:
    """Migrate, add three schools and two partners; dispose of the engine afterwards."""
    engine = make_engine(url)
    upgrade(engine)
    now = clock.now()
    with session_scope(engine) as session:
        for n, school_id in enumerate(SCHOOLS):
            session.add(
                School(id=school_id, name=school_id, dfe_number=f"302401{n}", created_at=now)
            )
        for partner_id in PARTNERS:
            session.add(_partner(partner_id, now))
    sealer = KekSealer(LocalKeyProvider.generate_file(tmp_path / "kek.json"))
    keyring = AuditKeyring(lambda: session_scope(engine), sealer, clock.now)
    try:
        yield ConsentDb(engine, clock, keyring, sealer)
    finally:
        engine.dispose()


def _partner(partner_id: str, now: datetime) -> Partner:
    return Partner(
        id=partner_id,
        name=partner_id,
        client_id=f"cli_{partner_id}",
        client_secret_hash="0" * 64,
        webhook_secret_sealed=b"-",
        created_at=now,
    )
