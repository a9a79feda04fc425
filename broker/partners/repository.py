"""SQL of the partners context."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from broker.partners.models import Partner, PartnerAreaRequest


class PartnerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, partner_id: str) -> Partner | None:
        return self.session.get(Partner, partner_id)

    def by_name(self, name: str) -> Partner | None:
        return self.session.exec(select(Partner).where(Partner.name == name)).first()

    def by_client_id(self, client_id: str) -> Partner | None:
        return self.session.exec(select(Partner).where(Partner.client_id == client_id)).first()

    def list(self) -> Sequence[Partner]:
        return self.session.exec(select(Partner).order_by(col(Partner.created_at))).all()

    def requests(self, partner_id: str) -> Sequence[PartnerAreaRequest]:
        stmt = select(PartnerAreaRequest).where(PartnerAreaRequest.partner_id == partner_id)
        return self.session.exec(stmt).all()

    def add(self, *rows: Partner | PartnerAreaRequest) -> None:
        self.session.add_all(rows)
        self.session.flush()
