"""The consent engine inside a broker process: decision cache, its Redis listener, the
access-log writer, and how routers reach them.

For the partner read path::

    from broker.consent_wiring import AccessLogDep, DecisionCacheDep
    from consent.access_log import LogEntry

    decision = await cache.decide(partner_id, school_id, [area], now)   # or decide_cached
    seq = await access_log.append(LogEntry(...))   # before any data leaves; raises if not
                                                   # written (AccessLogWriteError -> 503)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, FastAPI, Request
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.responses import Response

from broker.admin.consents import consent_service, to_domain_error
from broker.admin.guard import LoginRateLimiter
from broker.admin.settings import AdminSettings
from broker.db import WalCheckpointer, is_sqlite_file, make_engine, session_scope
from broker.invalidation import InvalidationListener, Subscriber
from broker.problems import problem_response
from broker.resources import Resources
from consent.access_log import AccessLogWriter
from consent.audit_keys import AuditKeyring
from consent.decisions import CHANNEL, DecisionCache, Loader, publish_invalidations
from consent.engine import ConsentTimeline
from consent.errors import ConsentError
from consent.repository import ConsentRepository

log = logging.getLogger(__name__)


@dataclass
class ConsentRuntime:
    """What one API process holds for consents; built and started in the lifespan."""

    resources: Resources
    cache: DecisionCache
    listener: InvalidationListener
    access_log: AccessLogWriter
    keyring: AuditKeyring
    admin_settings: AdminSettings
    publisher: redis.Redis
    # The access log commits through its own engine.  SQLite: one that never checkpoints
    # the WAL itself; the checkpointer does it off the read path.  PostgreSQL: a small pool
    # that does not ping on checkout (a round trip per batch); the writer retries a batch
    # once on a connection found dead before its commit.
    log_engine: Engine | None = None
    checkpointer: WalCheckpointer | None = None
    login_limiter: LoginRateLimiter | None = None
    # Security state (rate-limit counters): the Redis that never evicts.
    state_redis: redis.Redis | None = None

    @classmethod
    def build(
        cls, resources: Resources, subscribers: Mapping[str, Subscriber] | None = None
    ) -> ConsentRuntime:
        """`subscribers`: the process's other caches, fed by the same listener."""

        def unit() -> AbstractContextManager[Session]:
            return session_scope(resources.engine)

        keyring = AuditKeyring(unit, resources.sealer, resources.clock.now)
        cache = DecisionCache(timeline_loader(resources))
        log_engine = checkpointer = None
        if is_sqlite_file(resources.engine):
            log_engine = make_engine(resources.settings.database_url, auto_checkpoint=False)
            checkpointer = WalCheckpointer(resources.engine)
        elif resources.engine.dialect.name == "postgresql":
            log_engine = make_engine(
                resources.settings.database_url, pre_ping=False, pool_size=1, max_overflow=1
            )
        writer_engine = log_engine or resources.engine

        def log_unit() -> AbstractContextManager[Session]:
            return session_scope(writer_engine)

        admin_settings = AdminSettings()
        state_redis = resources.state_redis_sync()
        login_limiter = LoginRateLimiter(
            state_redis,
            per_ip=admin_settings.admin_login_per_ip_per_minute,
            per_account=admin_settings.admin_login_per_account_per_minute,
        )
        return cls(
            resources=resources,
            cache=cache,
            listener=InvalidationListener(
                {CHANNEL: cache, **(subscribers or {})}, resources.settings.redis_url
            ),
            access_log=AccessLogWriter(log_unit, keyring.key_for),
            keyring=keyring,
            admin_settings=admin_settings,
            publisher=resources.redis_sync(),
            log_engine=log_engine,
            checkpointer=checkpointer,
            login_limiter=login_limiter,
            state_redis=state_redis,
        )

    def announce(self, pairs: Iterable[tuple[str, str]]) -> None:
        """After a commit: forget here at once, and tell every other process."""
        pairs = set(pairs)
        for school_id, partner_id in pairs:
            self.cache.invalidate(school_id, partner_id)
        try:
            publish_invalidations(self.publisher, pairs)
        except redis.RedisError:
            # Committed already; other processes' listeners are cut off too, so their
            # caches run on the one-second backstop until Redis is back.
            log.exception("could not publish consent invalidations", extra={"pairs": len(pairs)})

    async def start(self) -> None:
        await self.access_log.start()
        await self.listener.start()
        if self.checkpointer is not None:
            await self.checkpointer.start()

    async def stop(self) -> None:
        await self.listener.stop()
        await self.access_log.stop()
        if self.checkpointer is not None:
            await self.checkpointer.stop()
        if self.log_engine is not None:
            self.log_engine.dispose()
        self.publisher.close()
        if self.state_redis is not None:
            self.state_redis.close()


def timeline_loader(resources: Resources) -> Loader:
    """Load a (partner, school) pair's folded consents from the database, for the cache."""
    grace = resources.settings.consent.revocation_grace

    def load(partner_id: str, school_id: str) -> tuple[ConsentTimeline, ...]:
        with Session(resources.engine) as session:
            return ConsentRepository(session).timelines(school_id, partner_id, grace)

    return load


@asynccontextmanager
async def consent_lifespan(
    app: FastAPI, subscribers: Mapping[str, Subscriber] | None = None
) -> AsyncIterator[ConsentRuntime]:
    """Start the consent runtime on `app.state.resources`; stop it on the way out."""
    runtime = ConsentRuntime.build(app.state.resources, subscribers)
    app.state.consent = runtime
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def _consent_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsentError)
    error = to_domain_error(exc)
    headers = dict(error.headers or {})
    if error.status == 503:
        # The access log not taking entries (the database away): worth retrying shortly.
        headers.setdefault("Retry-After", "1")
    return problem_response(
        error.status,
        slug=error.slug,
        title=error.title,
        detail=error.detail,
        headers=headers or None,
        **error.extra,
    )


def install_consent(app: FastAPI) -> None:
    """The admin API and the problem rendering of consent errors."""
    from broker.routers import admin as admin_routes

    app.add_exception_handler(ConsentError, _consent_error)
    app.include_router(admin_routes.router)


def finalize_ended(resources: Resources, publisher: redis.Redis) -> list[str]:
    """Record every consent whose end has passed; for a periodic Celery task. Idempotent."""
    grace = resources.settings.consent.revocation_grace
    with session_scope(resources.engine) as session:
        service = consent_service(session, grace)
        ended = service.finalize_ended(resources.clock.now())
    publish_invalidations(publisher, service.changed)
    return [view.consent.id for view in ended]


def runtime_of(request: Request) -> ConsentRuntime:
    runtime: ConsentRuntime = request.app.state.consent
    return runtime


async def get_runtime(request: Request) -> ConsentRuntime:
    return runtime_of(request)


async def get_decision_cache(request: Request) -> DecisionCache:
    return runtime_of(request).cache


async def get_access_log(request: Request) -> AccessLogWriter:
    return runtime_of(request).access_log


RuntimeDep = Annotated[ConsentRuntime, Depends(get_runtime)]
DecisionCacheDep = Annotated[DecisionCache, Depends(get_decision_cache)]
AccessLogDep = Annotated[AccessLogWriter, Depends(get_access_log)]
