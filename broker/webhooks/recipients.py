"""Who hears of a `data.updated`: the partners the consent engine lets read that area then."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from broker.webhooks.service import Recipients
from consent.repository import ConsentRepository
from consent.service import ConsentService


def consent_recipients(session: Session, grace: timedelta) -> Recipients:
    """Recipients decided from the stored consent history (no cache: a worker has none).

    Every partner that ever had a consent with the school is asked about, since a past
    consent may have been narrowed or revoked: the engine alone says what held at `at`.
    """
    service = ConsentService(session, grace=grace)

    def recipients(school_id: str, area: str, at: datetime) -> list[str]:
        partners = {c.partner_id for c in ConsentRepository(session).for_school(school_id)}
        return sorted(p for p in partners if service.decide_at(school_id, p, [area], at).allowed)

    return recipients
