"""What the partner API says about webhook deliveries."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from broker.clock import rfc3339
from broker.webhooks.models import DeliveryStatus, WebhookDelivery
from broker.webhooks.service import DeliveryPage


def _instant(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header of every attempt: dedupe on it")
    event_type: str
    status: DeliveryStatus
    attempts: int = Field(description="Attempts since the delivery was queued or re-queued")
    created_at: str
    last_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    delivered_at: str | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            created_at=rfc3339(delivery.created_at),
            last_attempt_at=_instant(delivery.last_attempt_at),
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            next_attempt_at=_instant(delivery.next_attempt_at),
            delivered_at=_instant(delivery.delivered_at),
        )


class PageMeta(BaseModel):
    next_cursor: str | None


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    meta: PageMeta

    @classmethod
    def of(cls, page: DeliveryPage) -> DeliveryList:
        return cls(
            data=[DeliveryOut.of(d) for d in page.items],
            meta=PageMeta(next_cursor=page.next_cursor),
        )
