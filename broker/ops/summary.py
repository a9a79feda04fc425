"""What an operator asks of a running deployment, each answer one query or one Redis call.

Shared by `misbroker status` and by `/metrics` (queue depth, failing webhooks), so the
screen and the dashboard never disagree about what "failing" or "silent" means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import redis
from sqlalchemy import Connection, func, or_, select
from sqlmodel import col

from broker.schools.models import Agent, School
from broker.webhooks.models import DeliveryStatus, WebhookDelivery
from cache.models import CachedArea
from consent.areas import AREAS
from consent.models import AccessLogRow

# Set by the `broker.heartbeat` task (beat schedules it, a worker runs it) in the cache Redis.
HEARTBEAT_KEY = "misbroker:worker:heartbeat"
# Celery's default queue: a Redis list of waiting task messages.
CELERY_QUEUE = "celery"
ACCESS_RATE_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class WebhookHealth:
    retrying: int  # pending deliveries whose last attempt failed
    failed_last_day: int  # deliveries that gave up in the last 24 h


PROBE_SECONDS = 2.0
T = TypeVar("T")


def probe(url: str, read: Callable[[redis.Redis], T]) -> T | None:
    """`read` on a short-lived client of the Redis at `url`; None if it does not answer."""
    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_SECONDS, socket_timeout=PROBE_SECONDS
    )
    try:
        return read(client)
    except redis.RedisError:
        return None
    finally:
        client.close()


def queue_depth(client: redis.Redis) -> int:
    """Tasks waiting in Celery's queue (not those a worker holds)."""
    return int(client.llen(CELERY_QUEUE))


def heartbeat_age(client: redis.Redis, now: datetime) -> float | None:
    """Seconds since the heartbeat task last ran (beat and a worker both alive), if ever."""
    raw = client.get(HEARTBEAT_KEY)
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return max(0.0, (now - datetime.fromisoformat(text)).total_seconds())


def schools_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(col(School.status), func.count()).group_by(col(School.status))).all()
    return {str(getattr(status, "value", status)): int(n) for status, n in rows}


def silent_agents(conn: Connection, now: datetime, silent_after: timedelta) -> tuple[int, int]:
    """(silent, live) agents: live = not revoked; silent = no heartbeat within `silent_after`."""
    live = col(Agent.revoked_at).is_(None)
    quiet = or_(
        col(Agent.last_heartbeat_at).is_(None), col(Agent.last_heartbeat_at) < now - silent_after
    )
    silent = conn.execute(select(func.count()).where(live, quiet)).scalar_one()
    total = conn.execute(select(func.count()).where(live).select_from(Agent)).scalar_one()
    return int(silent), int(total)


def stale_areas(conn: Connection, now: datetime) -> tuple[int, int]:
    """(stale, cached) areas: stale = data older than its area's validity."""
    stale = 0
    for area in AREAS:
        stale += conn.execute(
            select(func.count()).where(
                col(CachedArea.area) == area.name, col(CachedArea.as_of) < now - area.validity
            )
        ).scalar_one()
    cached = conn.execute(
        select(func.count()).where(col(CachedArea.as_of).is_not(None))
    ).scalar_one()
    return int(stale), int(cached)


def webhook_health(conn: Connection, now: datetime) -> WebhookHealth:
    retrying = conn.execute(
        select(func.count()).where(
            col(WebhookDelivery.status) == DeliveryStatus.PENDING, col(WebhookDelivery.attempts) > 0
        )
    ).scalar_one()
    failed = conn.execute(
        select(func.count()).where(
            col(WebhookDelivery.status) == DeliveryStatus.FAILED,
            col(WebhookDelivery.last_attempt_at) >= now - timedelta(days=1),
        )
    ).scalar_one()
    return WebhookHealth(int(retrying), int(failed))


def access_log_entries_since(conn: Connection, since: datetime) -> int:
    return int(conn.execute(select(func.count()).where(col(AccessLogRow.at) >= since)).scalar_one())


def queue_redis_url(celery_broker_url: str) -> str:
    """Celery's broker URL as redis-py spells it (kombu's `redis+socket://` is `unix://`)."""
    prefix = "redis+socket://"
    if celery_broker_url.startswith(prefix):
        return "unix://" + celery_broker_url.removeprefix(prefix)
    return celery_broker_url
