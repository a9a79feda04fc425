"""SQL of the schools context."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from broker.schools.models import Agent, School, SchoolAdmin


class SchoolRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, school_id: str) -> School | None:
        return self.session.get(School, school_id)

    def by_dfe_number(self, dfe_number: str) -> School | None:
        return self.session.exec(select(School).where(School.dfe_number == dfe_number)).first()

    def list(self) -> Sequence[School]:
        return self.session.exec(select(School).order_by(col(School.created_at))).all()

    def add(self, *rows: School | Agent | SchoolAdmin) -> None:
        self.session.add_all(rows)
        # Flush now so a unique-constraint race surfaces here, inside the unit of work.
        self.session.flush()

    def agent_by_key_hash(self, key_hash: str) -> Agent | None:
        return self.session.exec(select(Agent).where(Agent.key_hash == key_hash)).first()

    def agents(self, school_id: str) -> Sequence[Agent]:
        return self.session.exec(select(Agent).where(Agent.school_id == school_id)).all()

    def admins(self, school_id: str) -> Sequence[SchoolAdmin]:
        """Every admin the school has had, removed ones too (their names stay in histories)."""
        stmt = select(SchoolAdmin).where(SchoolAdmin.school_id == school_id)
        return self.session.exec(stmt.order_by(col(SchoolAdmin.created_at))).all()

    def admin_by_email(self, email: str) -> SchoolAdmin | None:
        return self.session.exec(select(SchoolAdmin).where(SchoolAdmin.email == email)).first()
