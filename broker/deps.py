"""`Annotated` dependencies: how routers reach the clients built in the lifespan."""

from __future__ import annotations

from collections.abc import Iterator

import redis.asyncio as aredis
from fastapi import Request
from sqlmodel import Session

from broker.clock import Clock
from broker.db import session_scope
from broker.resources import Resources
from cache.service import CacheService

# Dependencies that only read app.state are `async def`: FastAPI runs a plain `def`
# dependency in the thread pool, a hand-off that costs more than the lookup itself.


def resources_of(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def get_resources(request: Request) -> Resources:
    return resources_of(request)


async def get_redis(request: Request) -> aredis.Redis:
    client: aredis.Redis = request.app.state.redis
    return client


async def get_state_redis(request: Request) -> aredis.Redis:
    """The Redis of security state (tokens, counters): never evicted, unlike the cache's."""
    client: aredis.Redis = request.app.state.state_redis
    return client


async def get_batch_applier(request: Request) -> CacheService:
    """The encrypted cache (built in the lifespan)."""
    cache: CacheService = request.app.state.cache
    return cache


async def get_clock(request: Request) -> Clock:
    return resources_of(request).clock


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request, committed once when the endpoint returns."""
    with session_scope(resources_of(request).engine) as session:
        yield session
