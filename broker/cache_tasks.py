"""The cache's periodic jobs as Celery tasks, wired to the broker's database and agents.

Each task is a thin shell: dependencies from the worker process, the job itself in
`cache.tasks` (idempotent, under a beat lock so two beats never act twice in one slot).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from broker.agenthub import commands
from broker.cache_wiring import build_keyring
from broker.clock import Clock
from broker.db import session_scope
from broker.resources import Resources
from broker.schools.models import School, SchoolStatus
from broker.worker import celery_app, resources
from cache import tasks
from cache.key_store import SqlDataKeyStore
from consent.engine import decide, fold
from consent.repository import ConsentRepository


class AgentRefreshRequester:
    """Stale areas become `extract` commands for the school's agent."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def request_extract(self, school_id: str, areas: list[str], reason: str) -> None:
        with session_scope(self.engine) as session:
            commands.request_extract(
                session, school_id=school_id, areas=areas, reason=reason, now=self.clock.now()
            )


def consented_areas(
    engine: Engine, grace: timedelta, now: Callable[[], datetime]
) -> Callable[[str], Collection[str]]:
    """Areas some partner may read now, outside a grace window (no refresh for those)."""

    def areas(school_id: str) -> set[str]:
        at = now()
        out: set[str] = set()
        with Session(engine) as session:
            repo = ConsentRepository(session)
            for consent in repo.for_school(school_id):
                timeline = fold(repo.events(consent.id), grace)
                for area in timeline.areas:
                    decision = decide([timeline], area, at)
                    if decision.allowed and not decision.in_grace:
                        out.add(area)
        return out

    return areas


def closed_schools(engine: Engine) -> list[tuple[str, datetime]]:
    with Session(engine) as session:
        stmt = select(School).where(col(School.status) == SchoolStatus.CLOSED)
        return [(s.id, s.closed_at) for s in session.exec(stmt) if s.closed_at is not None]


def cache_deps(res: Resources) -> tasks.CacheDeps:
    return tasks.CacheDeps(
        engine=res.engine,
        redis=res.redis_sync(),
        blobs=res.blobs,
        keyring=build_keyring(res),
        key_store=SqlDataKeyStore(res.engine, res.clock.now),
        clock=res.clock,
        settings=res.settings.cache,
    )


_deps: tasks.CacheDeps | None = None


def deps() -> tasks.CacheDeps:
    global _deps  # noqa: PLW0603 - one set per worker process, like its other clients
    if _deps is None:
        _deps = cache_deps(resources())
    return _deps


@celery_app.task(name=tasks.PURGE_EXPIRED, **tasks.TASK_OPTIONS)
def purge_expired() -> None:
    tasks.purge_expired(deps())


@celery_app.task(name=tasks.REFRESH_STALE, **tasks.TASK_OPTIONS)
def refresh_stale() -> None:
    res = resources()
    grace = res.settings.consent.revocation_grace
    tasks.refresh_stale(
        deps(),
        AgentRefreshRequester(res.engine, res.clock),
        consented=consented_areas(res.engine, grace, res.clock.now),
    )


@celery_app.task(name=tasks.DEMOTE_IDLE, **tasks.TASK_OPTIONS)
def demote_idle() -> None:
    tasks.demote_idle(deps())


@celery_app.task(name=tasks.SHRED_CLOSED_SCHOOLS, **tasks.TASK_OPTIONS)
def shred_closed_schools() -> None:
    tasks.shred_closed_schools(deps(), closed_schools(resources().engine))


@celery_app.task(name=tasks.REWRAP_KEYS, **tasks.TASK_OPTIONS)
def rewrap_keys() -> None:
    tasks.rewrap_keys(deps(), resources().key_provider.current_kek_id)
