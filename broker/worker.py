"""The Celery application: worker and beat.  `celery -A broker.worker ...`.

Clients (database engine, Redis, keys) are built once per worker process in
`worker_process_init`, never at import time, and reached through `resources()`.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import redis
from celery import Celery, signals

from broker.logging import configure_logging
from broker.ops import summary
from broker.resources import Resources
from broker.settings import load_settings

log = logging.getLogger(__name__)

# Celery warns at length when started as root, because a root worker that accepts pickle
# runs whatever the queue sends; ours accepts JSON only (celeryconfig.accept_content), and
# deployments run it as a non-root user.  The warning would bury `misbroker up`'s output.
warnings.filterwarnings("ignore", message="You're running the worker with superuser")

celery_app = Celery("misbroker")
celery_app.config_from_object("broker.celeryconfig")

_resources: Resources | None = None

HEARTBEAT_KEY = summary.HEARTBEAT_KEY


def resources() -> Resources:
    global _resources  # noqa: PLW0603 - one set of clients per worker process
    if _resources is None:
        _resources = Resources.build(load_settings())
    return _resources


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    broker = load_settings().broker
    name = "beat" if "beat" in sys.argv[1:] else "worker"
    configure_logging(broker.log_level, process_name=name, fmt=broker.effective_log_format)


@signals.worker_process_init.connect
def _init_worker_process(**_: Any) -> None:
    resources()


@signals.worker_process_shutdown.connect
def _close_worker_process(**_: Any) -> None:
    global _resources  # noqa: PLW0603
    if _resources is not None:
        _resources.close()
        _resources = None


@celery_app.task(name="broker.heartbeat", acks_late=True, ignore_result=True)
def heartbeat() -> None:
    """Beat and a worker are both alive: operators see the time in /metrics and readyz."""
    res = resources()
    client: redis.Redis = res.redis_sync()
    try:
        # A TTL so the key may be evicted under memory pressure, never the queue.
        client.set(HEARTBEAT_KEY, res.clock.now().isoformat(), ex=300)
    finally:
        client.close()


# Task modules import `celery_app` and `resources` from here, so they are registered last.
from broker import cache_tasks as _cache_tasks  # noqa: E402, F401 - registers cache.*
from broker import consent_tasks as _consent_tasks  # noqa: E402, F401 - registers consent.*
from broker.webhooks import tasks as _webhook_tasks  # noqa: E402, F401 - registers webhooks.*
from broker.writes import tasks as _write_tasks  # noqa: E402, F401 - registers writes.*
