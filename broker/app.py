"""The FastAPI application: composed from the routers, clients built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp

from broker import __version__
from broker.apidocs.wiring import install_api_docs
from broker.cache_wiring import build_cache_service
from broker.clock import Clock
from broker.consent_wiring import consent_lifespan, install_consent
from broker.console.wiring import install_console
from broker.edge import EdgeMiddleware
from broker.middleware import RequestContextMiddleware
from broker.partners.lane import PartnerReadLane
from broker.partners.ratelimit import PartnerRateLimiter
from broker.partners.reads import PartnerReads
from broker.partners.tokens import REVOCATION_CHANNEL, TokenCache
from broker.problems import install_problem_handlers
from broker.resources import Resources
from broker.routers import admin_agent, agent, oauth, partner, service, webhooks
from broker.settings import BrokerSettings, Environment, Settings, load_settings
from broker.writes.routes import install_writes
from cache.edge import EdgeCache, HotReader
from cache.hot import CHANNEL as HOT_CHANNEL
from cache.hot import AsyncHotCache


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """The router's routes, on the app's own list.

    `include_router` wraps a router and matches its routes twice per request (once to
    choose, once to handle), walking nested contexts meant for per-include options we do
    not use; on the partner read path that cost more than serving the page.  A router's
    prefix is already part of its routes' paths, so they can be added as they are.
    """
    app.router.routes.extend(router.routes)


class BrokerApp(FastAPI):
    """The broker's application: FastAPI with the partner read fast lane in front of its
    whole middleware stack (the lane stamps its own responses as that stack would)."""

    def build_middleware_stack(self) -> ASGIApp:
        return PartnerReadLane(super().build_middleware_stack(), self)


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = Resources.build(settings or load_settings(), clock)
        app.state.resources = resources
        app.state.redis = resources.redis_async()
        # Tokens and rate-limit counters: the Redis that never evicts (may be the same one).
        app.state.state_redis = resources.state_redis_async()
        cache = app.state.cache = build_cache_service(resources)
        edge = EdgeCache(
            page_ttl_seconds=resources.settings.cache.hot_ttl_seconds,
            max_page_bytes=resources.settings.cache.edge_page_bytes,
        )
        cache.on_invalidate(edge.drop)  # an upload here is not served old here, even once
        app.state.token_cache = TokenCache()
        subscribers = {HOT_CHANNEL: edge, REVOCATION_CHANNEL: app.state.token_cache}
        hot_reader = HotReader(
            edge,
            AsyncHotCache(
                app.state.redis,
                cache.keyring,
                cache.namer,
                ttl_seconds=resources.settings.cache.hot_ttl_seconds,
            ),
            cache.keyring,
            cache.namer,
            resources.engine,
        )
        limiter = app.state.rate_limiter = PartnerRateLimiter(resources.settings.state_redis_url)
        try:
            async with consent_lifespan(app, subscribers) as consent:
                app.state.partner_reads = PartnerReads(
                    resources.engine, consent.cache, consent.access_log, cache, hot_reader
                )
                await limiter.start()
                try:
                    yield
                finally:
                    await limiter.stop()
                    await hot_reader.stop()
        finally:
            await app.state.redis.aclose()
            await app.state.state_redis.aclose()
            resources.close()

    # In production the docs page is off; `/openapi.json` stays: clients and the conformance
    # tests read it.  Elsewhere `/docs` is Swagger UI served by the broker itself (no CDN).
    production = (settings.broker if settings else BrokerSettings()).environment is (
        Environment.PRODUCTION
    )
    app = BrokerApp(
        docs_url=None,
        redoc_url=None,
        title="misbroker",
        version=__version__,
        summary="Consent-enforcing broker for UK school MIS data",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    # The partner router first: routes are tried in order, and partner reads are most traffic.
    for router in (partner.router, service.router, agent.router, oauth.router):
        add_routes(app, router)
    app.include_router(webhooks.router)
    app.include_router(admin_agent.router)
    install_consent(app)
    install_writes(app)
    install_console(app)
    if not production:
        install_api_docs(app)
    app.add_middleware(EdgeMiddleware)  # body limits before the lane, routing or auth
    app.add_middleware(RequestContextMiddleware)
    return app
