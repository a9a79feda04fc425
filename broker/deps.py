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


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def get_redis(request: Request) -> aredis.Redis:
    client: aredis.Redis = request.app.state.redis
    return client


def get_batch_applier(request: Request) -> CacheService:
    """The encrypted cache (built in the lifespan)."""
    cache: CacheService = request.app.state.cache
    return cache


def get_clock(request: Request) -> Clock:
    return get_resources(request).clock


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request, committed once when the endpoint returns."""
    with session_scope(get_resources(request).engine) as session:
        yield session
