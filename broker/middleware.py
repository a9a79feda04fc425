"""Pure ASGI middleware (no per-request task switching): request ids and metrics."""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache

from prometheus_client import Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.logging import request_id_var
from broker.problems import internal_error_response

_INCOMING_ID = re.compile(r"^[A-Za-z0-9._\-]{8,128}$")

HTTP_REQUESTS = Counter(
    "misbroker_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "misbroker_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class RequestContextMiddleware:
    """Gives every request an id (kept from `X-Request-Id` if sane) and records metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        token = request_id_var.set(rid)
        status = 500
        started = time.perf_counter()

        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette renders an unhandled error outside every middleware, so its 500 would
            # carry no id; answer it here, then let the error go on to be logged.
            if not responded:
                await internal_error_response()(scope, receive, send_with_id)
            raise
        finally:
            count_request(scope["method"], _route_template(scope), status, started)
            request_id_var.reset(token)


def request_id_of(scope: Scope) -> str:
    """The request's id: the client's `X-Request-Id` if sane, else a new random one."""
    incoming = scope_header(scope, b"x-request-id")
    return incoming if incoming and _INCOMING_ID.match(incoming) else os.urandom(16).hex()


def count_request(method: str, route: str, status: int, started: float) -> None:
    """The request metrics: `started` is `time.perf_counter()` when it arrived."""
    _requests(method, route, status).inc()
    _latency(method, route).observe(time.perf_counter() - started)


# Children by label values, found once: `labels()` takes a lock and builds a key each call.
# Bounded: methods, route templates and statuses are few (ids never reach a label).
@lru_cache(maxsize=1024)
def _requests(method: str, route: str, status: int) -> Counter:
    return HTTP_REQUESTS.labels(method, route, str(status))


@lru_cache(maxsize=1024)
def _latency(method: str, route: str) -> Histogram:
    return HTTP_LATENCY.labels(method, route)


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case) in an ASGI scope."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_template(scope: Scope) -> str:
    """The route's path template, so metrics never carry ids (no cardinality blow-up)."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", []):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", "unmatched"))
    return "unmatched"
