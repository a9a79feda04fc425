"""Celery task of write-back: expire undelivered writes and purge finished payloads.

Registered by importing this module at the end of `broker/worker.py`; beat runs it every
minute.  Idempotent: an expired write is not queued any more, a purged payload is gone.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.exc import OperationalError

from broker.db import session_scope
from broker.worker import celery_app, resources
from broker.writes.service import expire_due, purge_finished
from broker.writes.settings import WriteSettings

EXPIRE_AND_PURGE: Final = "writes.expire_and_purge"
BEAT_SCHEDULE: Final[dict[str, float]] = {EXPIRE_AND_PURGE: 60.0}


@celery_app.task(
    name=EXPIRE_AND_PURGE,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    max_retries=5,
)
def expire_and_purge_task() -> tuple[int, int]:
    """(writes expired, payloads purged) at the clock's now."""
    res = resources()
    now = res.clock.now()
    with session_scope(res.engine) as session:
        expired = expire_due(session, now)
    with session_scope(res.engine) as session:
        purged = purge_finished(session, now, WriteSettings().purge_after)
    return expired, purged
