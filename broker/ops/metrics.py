"""The broker's own Prometheus metrics, beyond HTTP requests and latency (broker.middleware).

Counters are per API process (Prometheus sums the instances).  What belongs to the whole
deployment (Celery's queue, failing webhooks, areas per tier, the worker's heartbeat) is
read at scrape time by `DeploymentCollector`, so every API process reports the same
value: dashboards take `max` of those, never `sum`.  Labels are bounded sets (tiers,
outcomes, the consent engine's reasons): never an id.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlmodel import col

from broker.ops import summary
from cache.models import CachedArea

PARTNER_READS = Counter(
    "misbroker_partner_reads_total",
    "Partner data reads answered with data, by the tier that served the page "
    "(edge: this process's memory; hot: Redis; warm: the database, promoting cold first)",
    ["tier"],
)
CONSENT_DECISIONS = Counter(
    "misbroker_consent_decisions_total",
    "Consent decisions on partner reads, each also in the access log",
    ["result", "reason"],
)
AGENT_UPLOADS = Counter(
    "misbroker_agent_uploads_total", "Agent upload batches, by outcome", ["outcome"]
)
AGENT_UPLOAD_RECORDS = Counter(
    "misbroker_agent_upload_records_total", "Records upserted or deleted by agent uploads"
)


@lru_cache(maxsize=64)
def decision_counter(allowed: bool, reason: str) -> Counter:
    """The child for one (result, reason): `labels()` takes a lock and builds a key each call."""
    return CONSENT_DECISIONS.labels("allowed" if allowed else "denied", reason)


@lru_cache(maxsize=8)
def read_counter(tier: str) -> Counter:
    return PARTNER_READS.labels(tier)


class DeploymentCollector(Collector):
    """Gauges of the whole deployment, read from the database and Redis at scrape time."""

    def __init__(self, engine: Engine, queue_url: str, cache_url: str, now: datetime) -> None:
        self.engine = engine
        self.queue_url = queue_url
        self.cache_url = cache_url
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield from self._redis_gauges()
        with self.engine.connect() as conn:
            hooks = summary.webhook_health(conn, self.now)
            tiers = conn.execute(
                select(col(CachedArea.tier), func.count())
                .where(col(CachedArea.as_of).is_not(None))
                .group_by(col(CachedArea.tier))
            ).all()
        failing = GaugeMetricFamily(
            "misbroker_webhook_deliveries_failing",
            "Webhook deliveries whose last attempt failed and that are still being retried",
        )
        failing.add_metric([], hooks.retrying)
        yield failing
        failed = GaugeMetricFamily(
            "misbroker_webhook_deliveries_failed_last_day",
            "Webhook deliveries that gave up (retry window over) in the last 24 hours",
        )
        failed.add_metric([], hooks.failed_last_day)
        yield failed
        areas = GaugeMetricFamily(
            "misbroker_cache_areas", "Cached areas of all schools, by tier", labels=["tier"]
        )
        for tier, count in tiers:
            areas.add_metric([str(getattr(tier, "value", tier))], count)
        yield areas

    def _redis_gauges(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "misbroker_queue_depth", "Tasks waiting in Celery's queue (-1: queue unreachable)"
        )
        age = GaugeMetricFamily(
            "misbroker_worker_heartbeat_age_seconds",
            "Seconds since beat and a worker last ran the heartbeat task (-1: none seen)",
        )
        waiting = summary.probe(self.queue_url, summary.queue_depth)
        seconds = summary.probe(self.cache_url, lambda c: summary.heartbeat_age(c, self.now))
        depth.add_metric([], -1 if waiting is None else waiting)
        age.add_metric([], -1 if seconds is None else seconds)
        yield depth
        yield age
