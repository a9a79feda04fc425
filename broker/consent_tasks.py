"""The consent context's periodic job as a Celery task: record consents whose end has passed.

Ends themselves need no job (decisions already deny from the end on); this records the
terminal state once, tells partners (`consent.ended` in the outbox) and frees the pair
for a new grant.  Idempotent: a second run, or two workers at once, record nothing twice.
To run it: import this module next to the other task modules in `broker/worker.py`, and
add `"consent.finalize_ended": {"task": "consent.finalize_ended", "schedule": 60.0,
"options": {"expires": 60.0}}` to the beat schedule in `broker/celeryconfig.py`.
"""

from __future__ import annotations

from broker.consent_wiring import finalize_ended
from broker.worker import celery_app, resources


@celery_app.task(
    name="consent.finalize_ended",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=5,
)
def finalize_ended_task() -> int:
    res = resources()
    publisher = res.redis_sync()
    try:
        return len(finalize_ended(res, publisher))
    finally:
        publisher.close()
