"""Service endpoints for operators and orchestrators: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

import redis.asyncio as aredis
from fastapi import APIRouter, Depends, Header
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from broker.admin.guard import hash_gate
from broker.db import ping
from broker.deps import get_redis, get_resources
from broker.ops.metrics import DeploymentCollector
from broker.ops.summary import queue_redis_url
from broker.problems import problem_response
from broker.resources import Resources

router = APIRouter(tags=["service"])

CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return name, f"down: no answer within {CHECK_TIMEOUT_SECONDS:.0f}s"
    except Exception as exc:
        return name, f"down: {type(exc).__name__}: {str(exc)[:200]}"
    return name, "ok"


@router.get(
    "/readyz",
    summary="Database, Redis and blob store are reachable",
    responses={503: {"description": "A dependency is down; the problem names which"}},
)
async def readyz(
    resources: Annotated[Resources, Depends(get_resources)],
    redis_client: Annotated[aredis.Redis, Depends(get_redis)],
) -> Response:
    results = dict(
        await asyncio.gather(
            _check("database", run_in_threadpool(ping, resources.engine)),
            _check("redis", redis_client.ping()),
            _check("blob_store", run_in_threadpool(resources.blobs.check)),
        )
    )
    down = [name for name, state in results.items() if state != "ok"]
    if down:
        return problem_response(
            503,
            slug="not-ready",
            title="Not ready",
            detail="down: " + ", ".join(f"{n} ({results[n].removeprefix('down: ')})" for n in down),
            checks=results,
        )
    # Saturation is reported, not a reason to leave the pool: a full gate already sheds load.
    gate = hash_gate()
    login = {"hashes_in_flight": gate.in_flight, "hash_slots": gate.slots}
    return JSONResponse({"status": "ready", "checks": results, "login": login})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(
    resources: Annotated[Resources, Depends(get_resources)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    # In production (or whenever MISBROKER_METRICS_TOKEN is set) only the bearer of the
    # token sees metrics; anyone else, and everyone when no token is set, gets a 404.
    token = resources.settings.broker.metrics_token
    if token is not None or resources.settings.production:
        expected = b"Bearer " + token.get_secret_value().encode() if token else None
        given = (authorization or "").encode("latin-1", "replace")
        if expected is None or not hmac.compare_digest(given, expected):
            return problem_response(404, slug="not-found", title="Not Found", detail="Not Found")
    # The deployment's gauges read the database and Redis: off the event loop.
    body = await run_in_threadpool(_exposition, resources)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _exposition(resources: Resources) -> bytes:
    deployment = CollectorRegistry(auto_describe=False)
    settings = resources.settings
    deployment.register(
        DeploymentCollector(
            resources.engine,
            queue_url=queue_redis_url(settings.celery_broker_url),
            cache_url=settings.redis_url,
            now=resources.clock.now(),
        )
    )
    return generate_latest() + generate_latest(deployment)
