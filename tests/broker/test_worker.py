"""Celery wiring: every beat entry names a task the worker has, with the queue-safe options."""

from __future__ import annotations

from broker.worker import celery_app


def test_every_scheduled_job_is_a_registered_task() -> None:
    celery_app.loader.import_default_modules()
    registered = set(celery_app.tasks)
    schedule = celery_app.conf.beat_schedule
    assert {
        "cache.purge_expired",
        "cache.refresh_stale",
        "cache.demote_idle",
        "cache.shred_closed_schools",
        "cache.rewrap_keys",
        "consent.finalize_ended",
        "webhooks.fan_out",
        "webhooks.deliver_due",
        "writes.expire_and_purge",
    } <= set(schedule)
    for name, entry in schedule.items():
        assert entry["task"] in registered, name


def test_tasks_acknowledge_late_and_the_queue_is_json_only() -> None:
    celery_app.loader.import_default_modules()
    for name, task in celery_app.tasks.items():
        if not name.startswith("celery."):
            assert task.acks_late, name
    assert celery_app.conf.accept_content == ["json"]
    assert celery_app.conf.task_reject_on_worker_lost is True
