"""Celery configuration, read lazily by the worker and beat on first use (not at import)."""

from __future__ import annotations

from broker.settings import load_settings
from cache.tasks import BEAT_SCHEDULE as CACHE_BEAT_SCHEDULE

_settings = load_settings()

broker_url = _settings.celery_broker_url
# Results are not used for control flow; keep none rather than fill Redis.
task_ignore_result = True
result_backend = None
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True
broker_connection_retry_on_startup = True
worker_hijack_root_logger = False
broker_transport_options = {
    # A task not acknowledged within this is redelivered (acks_late + a crashed worker).
    "visibility_timeout": _settings.broker.celery_visibility_timeout_seconds,
    "socket_timeout": 5,
}
# The cache's jobs (purge, refresh, demote, shred, rewrap) at their own periods.
_CACHE_JOBS = {
    name: {"task": name, "schedule": period, "options": {"expires": period}}
    for name, period in CACHE_BEAT_SCHEDULE.items()
}
beat_schedule = {
    **_CACHE_JOBS,
    "broker.heartbeat": {"task": "broker.heartbeat", "schedule": 30.0},
    # Ends need no job (decisions deny from the end on); this records and announces them.
    "consent.finalize_ended": {
        "task": "consent.finalize_ended",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    # `expires`: with workers down, five-second ticks must not pile up in the queue.
    "webhooks.fan_out": {"task": "webhooks.fan_out", "schedule": 5.0, "options": {"expires": 5.0}},
    # Write-back: undelivered writes expire, finished payloads are purged.
    "writes.expire_and_purge": {
        "task": "writes.expire_and_purge",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    "webhooks.deliver_due": {
        "task": "webhooks.deliver_due",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    },
}
