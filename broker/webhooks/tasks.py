"""Celery tasks of the webhooks context: thin wrappers over `broker.webhooks.service`.

Registered by importing this module at the end of `broker/worker.py`; beat runs both every
5 s.  Both are idempotent: fan-out skips pairs that have a delivery, and a delivery attempt
is claimed before it is sent.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy.exc import OperationalError

from broker.db import session_scope
from broker.webhooks.recipients import consent_recipients
from broker.webhooks.service import deliver_due, fan_out
from broker.webhooks.settings import WebhookSettings
from broker.webhooks.transport import webhook_client
from broker.worker import celery_app, resources

FAN_OUT: Final = "webhooks.fan_out"
DELIVER_DUE: Final = "webhooks.deliver_due"

# Periods in seconds, for the beat schedule.
BEAT_SCHEDULE: Final[dict[str, float]] = {FAN_OUT: 5.0, DELIVER_DUE: 5.0}

_OPTIONS: Final[dict[str, Any]] = {
    "acks_late": True,
    "ignore_result": True,
    # A database that is briefly unreachable or locked; anything else is a bug to see.
    "autoretry_for": (OperationalError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


@celery_app.task(name=FAN_OUT, **_OPTIONS)
def fan_out_task() -> int:
    """Turn new outbox events into webhook deliveries."""
    res = resources()
    settings = WebhookSettings()
    with session_scope(res.engine) as session:
        recipients = consent_recipients(session, res.settings.consent.revocation_grace)
        return fan_out(
            session,
            recipients,
            res.clock.now(),
            settings.fan_out_batch,
            settings.policy().window,
        )


@celery_app.task(name=DELIVER_DUE, **_OPTIONS)
def deliver_due_task() -> int:
    """Attempt the deliveries that are due; returns how many were attempted."""
    res = resources()
    settings = WebhookSettings()
    policy = settings.url_policy(res.settings.broker.environment)
    with webhook_client(policy) as http:
        attempts = deliver_due(
            res.engine, res.sealer, http, res.clock, settings.policy(), settings.deliver_batch
        )
    return len(attempts)
