"""SQL of the webhooks context."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from broker.events.models import OutboxEvent
from broker.partners.models import Partner, PartnerStatus
from broker.webhooks.models import DeliveryStatus, WebhookDelivery

_CLAIM_TRIES = 5  # a worker that loses a race looks again, a few times, then waits for beat


class WebhookRepository:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    def undispatched_events(self, limit: int) -> Sequence[OutboxEvent]:
        stmt = (
            select(OutboxEvent)
            .where(col(OutboxEvent.dispatched_at).is_(None))
            .order_by(col(OutboxEvent.created_at), col(OutboxEvent.id))
            .limit(limit)
        )
        if self.postgres:
            # Two fan-outs at once each take different events; SQLite's one writer serialises.
            stmt = stmt.with_for_update(skip_locked=True)
        return self.session.exec(stmt).all()

    def with_webhooks(self, partner_ids: Collection[str]) -> list[str]:
        """The active partners among these that have a webhook URL, in id order."""
        if not partner_ids:
            return []
        stmt = (
            select(Partner.id)
            .where(
                col(Partner.id).in_(partner_ids),
                col(Partner.webhook_url).is_not(None),
                Partner.status == PartnerStatus.ACTIVE,
            )
            .order_by(col(Partner.id))
        )
        return list(self.session.exec(stmt).all())

    def add_deliveries(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert, skipping any (event, partner) pair that already has a delivery."""
        if not rows:
            return 0
        insert = pg_insert if self.postgres else sqlite_insert
        stmt = (
            insert(WebhookDelivery)
            .values(list(rows))
            .on_conflict_do_nothing(index_elements=["event_id", "partner_id"])
        )
        return int(self.session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    def mark_dispatched(self, event_id: str, now: datetime) -> None:
        stmt = (
            update(OutboxEvent)
            .where(col(OutboxEvent.id) == event_id, col(OutboxEvent.dispatched_at).is_(None))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
        self.session.execute(stmt)

    def claim_due(self, now: datetime, lease_until: datetime) -> str | None:
        """Take the most overdue pending delivery by moving it out of sight until the lease ends.

        The conditional update is the claim: of two workers that read the same row, only the
        first one's update matches, and the other looks again.
        """
        for _ in range(_CLAIM_TRIES):
            found = self._most_overdue(now)
            if found is None:
                return None
            delivery_id, due = found
            claim = (
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id) == delivery_id,
                    col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                    col(WebhookDelivery.next_attempt_at) == due,
                )
                .values(next_attempt_at=lease_until)
                .execution_options(synchronize_session=False)
            )
            if self.session.execute(claim).rowcount:  # type: ignore[attr-defined]
                return delivery_id
        return None

    def _most_overdue(self, now: datetime) -> tuple[str, datetime] | None:
        stmt = (
            select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                col(WebhookDelivery.next_attempt_at) <= now,
            )
            .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
            .limit(1)
        )
        if self.postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        row = self.session.exec(stmt).first()
        if row is None or row[1] is None:
            return None
        return row[0], row[1]

    def get(self, delivery_id: str) -> WebhookDelivery | None:
        return self.session.get(WebhookDelivery, delivery_id)

    def page(
        self,
        partner_id: str,
        *,
        status: DeliveryStatus | None,
        limit: int,
        before: tuple[datetime, str] | None,
    ) -> Sequence[WebhookDelivery]:
        """A partner's deliveries, newest first, strictly after the `before` position."""
        stmt = select(WebhookDelivery).where(WebhookDelivery.partner_id == partner_id)
        if status is not None:
            stmt = stmt.where(WebhookDelivery.status == status)
        if before is not None:
            at, last_id = before
            stmt = stmt.where(
                (col(WebhookDelivery.created_at) < at)
                | ((col(WebhookDelivery.created_at) == at) & (col(WebhookDelivery.id) < last_id))
            )
        stmt = stmt.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc())
        return self.session.exec(stmt.limit(limit)).all()
