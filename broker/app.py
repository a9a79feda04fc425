"""The FastAPI application: composed from the routers, clients built in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from broker import __version__
from broker.clock import Clock
from broker.middleware import RequestContextMiddleware
from broker.problems import install_problem_handlers
from broker.resources import Resources
from broker.routers import agent, oauth, service
from broker.settings import Settings, load_settings


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = Resources.build(settings or load_settings(), clock)
        app.state.resources = resources
        app.state.redis = resources.redis_async()
        try:
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
    app.add_middleware(RequestContextMiddleware)
    return app
