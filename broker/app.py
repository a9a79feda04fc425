"""The FastAPI application: composed from the routers, clients built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from broker import __version__
from broker.cache_wiring import build_cache_service
from broker.clock import Clock
from broker.consent_wiring import consent_lifespan, install_consent
from broker.middleware import RequestContextMiddleware
from broker.partners.ratelimit import PartnerRateLimiter
from broker.partners.reads import PartnerReads
from broker.problems import install_problem_handlers
from broker.resources import Resources
from broker.routers import admin_agent, agent, oauth, partner, service, webhooks
from broker.settings import Settings, load_settings


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = Resources.build(settings or load_settings(), clock)
        app.state.resources = resources
        app.state.redis = resources.redis_async()
        app.state.cache = build_cache_service(resources)
        try:
            async with consent_lifespan(app) as consent:
                app.state.partner_reads = PartnerReads(
                    resources.engine, consent.cache, consent.access_log, app.state.cache
                )
                app.state.rate_limiter = PartnerRateLimiter(resources.settings.redis_url)
                yield
        finally:
            await app.state.redis.aclose()
            resources.close()

    app = FastAPI(
        title="misbroker",
        version=__version__,
        summary="Consent-enforcing broker for UK school MIS data",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(service.router)
    app.include_router(agent.router)
    app.include_router(oauth.router)
    app.include_router(partner.router)
    app.include_router(webhooks.router)
    app.include_router(admin_agent.router)
    install_consent(app)
    app.add_middleware(RequestContextMiddleware)
    return app
