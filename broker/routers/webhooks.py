"""Partner API: the webhook deliveries made to me, and asking for one again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from broker.clock import Clock
from broker.deps import get_clock, get_session
from broker.partners.auth import PartnerDep
from broker.webhooks import service
from broker.webhooks.models import DeliveryStatus
from broker.webhooks.schemas import DeliveryList, DeliveryOut

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


@router.get(
    "/deliveries",
    response_model=DeliveryList,
    summary="List the webhook deliveries made to me, newest first",
    responses={401: PROBLEM, 422: PROBLEM},
)
def list_deliveries(
    partner: PartnerDep,
    session: Annotated[Session, Depends(get_session)],
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
) -> DeliveryList:
    page = service.list_deliveries(session, partner.partner_id, status, limit, cursor)
    return DeliveryList.of(page)


@router.post(
    "/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=202,
    summary="Send a delivery again, with a fresh 24 h of retries",
    responses={401: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
def redeliver(
    delivery_id: str,
    partner: PartnerDep,
    session: Annotated[Session, Depends(get_session)],
    clock: Annotated[Clock, Depends(get_clock)],
) -> DeliveryOut:
    delivery = service.redeliver(session, partner.partner_id, delivery_id, clock.now())
    return DeliveryOut.of(delivery)
