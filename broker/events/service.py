"""Emitting events: a row in the caller's transaction, so it exists iff the change does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from broker.events.models import EVENT_TYPES, OutboxEvent
from broker.ids import new_id


def emit(
    session: Session,
    type_: str,
    *,
    school_id: str,
    payload: dict[str, Any],
    now: datetime,
    partner_id: str | None = None,
    area: str | None = None,
) -> OutboxEvent:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    event = OutboxEvent(
        id=new_id("evt"),
        type=type_,
        school_id=school_id,
        partner_id=partner_id,
        area=area,
        payload=payload,
        created_at=now,
    )
    session.add(event)
    return event
