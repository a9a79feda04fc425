"""Webhooks: fan-out from the outbox, signed delivery with retries, and the partner's view.

Delivery is at least once.  A worker first claims one due delivery in its own short
transaction (its `next_attempt_at` moves to the end of a lease, hiding it from other
workers), then sends, then records the outcome.  So no transaction holds SQLite's single
write lock while a partner's server thinks, and two workers never send the same attempt.
A crash after sending but before recording resends once the lease is over; receivers
dedupe on `webhook-id`, which is the delivery's id and stays the same on every attempt.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session
from standardwebhooks import Webhook

from broker import __version__
from broker.clock import Clock, rfc3339
from broker.db import session_scope
from broker.errors import ConflictError, InvalidInputError, NotFoundError
from broker.events.models import OutboxEvent
from broker.ids import new_id
from broker.partners.models import Partner, PartnerStatus
from broker.partners.service import webhook_context
from broker.security import SecretSealer
from broker.webhooks.addresses import WebhookUrlError
from broker.webhooks.models import DeliveryStatus, WebhookDelivery
from broker.webhooks.policy import DEFAULT_WINDOW, RetryPolicy
from broker.webhooks.repository import WebhookRepository

log = logging.getLogger(__name__)

# (school_id, area, at) -> the partners that may read that area of that school at `at`.
Recipients = Callable[[str, str, datetime], Sequence[str]]

USER_AGENT = f"misbroker-webhooks/{__version__}"
GONE = 410
MAX_PAGE = 200


class DeliveryNotFoundError(NotFoundError):
    slug = "webhook-delivery-not-found"
    title = "Webhook delivery not found"


class InvalidDeliveryCursorError(InvalidInputError):
    slug = "invalid-cursor"
    title = "Invalid cursor"


class NoWebhookUrlError(ConflictError):
    slug = "no-webhook-url"
    title = "No webhook URL"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt did; `error` is short and never holds a secret, URL or body."""

    delivery_id: str
    status: DeliveryStatus
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: Sequence[WebhookDelivery]
    next_cursor: str | None


# -- fan-out ----------------------------------------------------------------------------


def fan_out(
    session: Session,
    recipients: Recipients,
    now: datetime,
    limit: int = 100,
    window: timedelta = DEFAULT_WINDOW,
) -> int:
    """Turn up to `limit` undispatched outbox events, oldest first, into deliveries.

    Returns how many events were dispatched.  Consent events go to their partner; a
    `data.updated` goes to every partner `recipients` names for the event's instant.  Only
    active partners with a webhook URL get a delivery.  Running twice creates nothing twice.
    """
    repo = WebhookRepository(session)
    events = repo.undispatched_events(limit)
    for event in events:
        partner_ids = repo.with_webhooks(_audience(event, recipients))
        rows = [_delivery_row(event, p, now, window) for p in partner_ids]
        created = repo.add_deliveries(rows)
        repo.mark_dispatched(event.id, now)
        # An event no partner subscribes to is routine (most are): debug, not a line a minute.
        log.log(
            logging.INFO if created else logging.DEBUG,
            "event %s (%s): %d new webhook deliveries",
            event.id,
            event.type,
            created,
        )
    return len(events)


def _audience(event: OutboxEvent, recipients: Recipients) -> list[str]:
    if event.type.startswith(("consent.", "write.")):
        return [event.partner_id] if event.partner_id else []
    if event.type == "data.updated" and event.area:
        found = set(recipients(event.school_id, event.area, event.created_at))
        if event.partner_id is not None:  # news for one partner only (its view changed)
            found &= {event.partner_id}
        return sorted(found)
    return []


def _delivery_row(
    event: OutboxEvent, partner_id: str, now: datetime, window: timedelta
) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "partner_id": partner_id,
        "event_id": event.id,
        "event_type": event.type,
        "school_id": event.school_id,
        "payload": webhook_payload(event),
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "expires_at": now + window,
        "created_at": now,
    }


def webhook_payload(event: OutboxEvent) -> dict[str, Any]:
    """The body, by the Standard Webhooks convention: `type`, `timestamp`, `data`."""
    data = {**event.payload, "school_id": event.school_id}
    nested = data.get("event")
    if isinstance(nested, dict):
        # Which admin made the change is the school's business, not the partner's.
        data["event"] = {k: v for k, v in nested.items() if k != "actor"}
    return {"type": event.type, "timestamp": rfc3339(event.created_at), "data": data}


def encode_body(payload: dict[str, Any]) -> bytes:
    """Sorted keys: the same bytes on every attempt, whatever order the database kept."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def signed_headers(secret: str, msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
    at = at.astimezone(UTC)  # the library reads the instant as UTC whatever its zone
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


# -- delivery ---------------------------------------------------------------------------


def deliver_due(
    engine: Engine,
    sealer: SecretSealer,
    http: httpx.Client,
    clock: Clock,
    policy: RetryPolicy,
    limit: int = 20,
) -> list[Attempt]:
    """Attempt up to `limit` due deliveries, each claimed, sent and recorded on its own."""
    attempts: list[Attempt] = []
    for _ in range(limit):
        with session_scope(engine) as session:
            now = clock.now()
            claimed = WebhookRepository(session).claim_due(now, now + policy.lease)
        if claimed is None:
            break
        attempt = _attempt(engine, sealer, http, clock, policy, claimed)
        if attempt is not None:
            attempts.append(attempt)
    return attempts


def _attempt(
    engine: Engine,
    sealer: SecretSealer,
    http: httpx.Client,
    clock: Clock,
    policy: RetryPolicy,
    delivery_id: str,
) -> Attempt | None:
    try:
        with session_scope(engine) as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.status is not DeliveryStatus.PENDING:
                return None
            return deliver(session, sealer, http, delivery, clock.now(), policy)
    except SQLAlchemyError:
        raise  # the database is the task's problem: Celery retries it
    except Exception as exc:  # one poisoned delivery must not stop the rest
        return _crashed(engine, delivery_id, clock.now(), policy, exc)


def _crashed(
    engine: Engine, delivery_id: str, now: datetime, policy: RetryPolicy, exc: Exception
) -> Attempt:
    """Count an attempt that raised, so the window still ends it rather than the lease forever."""
    with session_scope(engine) as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        # The type only: a message could quote the URL or the body.
        return _record(
            delivery, now, policy, None, f"internal error: {type(exc).__name__}", final=False
        )


def deliver(
    session: Session,
    sealer: SecretSealer,
    http: httpx.Client,
    delivery: WebhookDelivery,
    now: datetime,
    policy: RetryPolicy,
) -> Attempt:
    """Send one attempt and record its outcome on `delivery` (the caller commits)."""
    partner = session.get(Partner, delivery.partner_id)
    if partner is None or partner.webhook_url is None or partner.status is not PartnerStatus.ACTIVE:
        return _record(delivery, now, policy, None, "partner has no webhook URL", final=True)
    try:
        secret = sealer.open(partner.webhook_secret_sealed, context=webhook_context(partner.id))
    except ValueError:
        return _record(delivery, now, policy, None, "webhook secret unreadable", final=False)
    code, error = _post(http, partner.webhook_url, delivery, secret.decode(), now, policy)
    return _record(delivery, now, policy, code, error, final=code == GONE)


def _post(
    http: httpx.Client,
    url: str,
    delivery: WebhookDelivery,
    secret: str,
    now: datetime,
    policy: RetryPolicy,
) -> tuple[int | None, str | None]:
    body = encode_body(delivery.payload)
    headers = signed_headers(secret, delivery.id, now, body)
    try:
        # Streamed and never read: a receiver cannot make us hold a large answer.
        with http.stream(
            "POST",
            url,
            content=body,
            headers=headers,
            timeout=policy.timeout,
            # A partner's URL is where its signed events go, and nowhere it redirects to.
            follow_redirects=False,
        ) as response:
            code = response.status_code
    except httpx.TimeoutException:
        return None, "timeout"
    except WebhookUrlError:
        # Retried: a partner can fix its DNS within the window; nothing was connected to.
        return None, "refused: address not allowed"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # The class name only: the message may quote the URL, which can carry a token.
        return None, f"request failed: {type(exc).__name__}"
    return code, None if 200 <= code < 300 else f"HTTP {code}"


def _record(
    delivery: WebhookDelivery,
    now: datetime,
    policy: RetryPolicy,
    code: int | None,
    error: str | None,
    *,
    final: bool,
) -> Attempt:
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = code
    delivery.last_error = error
    retry_at = None if final else policy.next_attempt(delivery.attempts, now, delivery.expires_at)
    if error is None:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
    elif retry_at is None:
        delivery.status = DeliveryStatus.FAILED
    delivery.next_attempt_at = retry_at if delivery.status is DeliveryStatus.PENDING else None
    _log_attempt(delivery, code, error)
    return Attempt(delivery.id, delivery.status, code, error)


def _log_attempt(delivery: WebhookDelivery, code: int | None, error: str | None) -> None:
    level = logging.WARNING if delivery.status is DeliveryStatus.FAILED else logging.INFO
    log.log(
        level,
        "webhook %s (%s) to partner %s: attempt %d -> %s, %s",
        delivery.id,
        delivery.event_type,
        delivery.partner_id,
        delivery.attempts,
        code if error is None else error,
        delivery.status.value,
    )


# -- the partner's view -----------------------------------------------------------------


def list_deliveries(
    session: Session,
    partner_id: str,
    status: DeliveryStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> DeliveryPage:
    """The partner's deliveries, newest first, a page at a time."""
    limit = max(1, min(limit, MAX_PAGE))
    before = _decode_cursor(cursor) if cursor else None
    rows = WebhookRepository(session).page(
        partner_id, status=status, limit=limit + 1, before=before
    )
    items = rows[:limit]
    more = len(rows) > limit
    return DeliveryPage(items, _encode_cursor(items[-1]) if more else None)


def redeliver(
    session: Session,
    partner_id: str,
    delivery_id: str,
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
) -> WebhookDelivery:
    """Queue a delivery again now, with a fresh retry window and attempt count."""
    delivery = WebhookRepository(session).get(delivery_id)
    if delivery is None or delivery.partner_id != partner_id:
        raise DeliveryNotFoundError(f"no webhook delivery {delivery_id!r}")
    partner = session.get(Partner, partner_id)
    if partner is None or partner.webhook_url is None:
        raise NoWebhookUrlError("no webhook URL is registered for this partner")
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.expires_at = now + window
    delivery.delivered_at = None
    session.add(delivery)
    session.flush()
    log.info("webhook %s re-queued by partner %s", delivery.id, partner_id)
    return delivery


def _encode_cursor(last: WebhookDelivery) -> str:
    raw = orjson.dumps([last.created_at.isoformat(), last.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """A position only: it is always applied within the caller's own deliveries."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, last_id = orjson.loads(raw)
        at = datetime.fromisoformat(at_text)
        at.astimezone(UTC)  # a crafted offset can push it off the timeline: SQL cannot bind it
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise InvalidDeliveryCursorError("the cursor is not one this API returned") from exc
    if at.tzinfo is None or not isinstance(last_id, str):
        raise InvalidDeliveryCursorError("the cursor is not one this API returned")
    return at, last_id
