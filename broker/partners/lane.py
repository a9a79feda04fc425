"""The partner read fast lane: a steady-state data read answered without the framework's
per-request machinery (its middleware stack, routing, dependency solving, request and
response objects), which costs more than serving the hot page itself.

The outermost ASGI layer (`broker.app.BrokerApp` puts it in front of FastAPI's whole
middleware stack).  It takes a `GET` of `/v1/schools/{school_id}/data/{area}` with no body
only when everything the answer needs is already in this process's memory: the access
token, a valid query, an *allowed* consent decision and the sealed hot page with its data
key.  Anything else (a first read, an unknown token, a refusal, a page not held, a
malformed query, an error while looking) passes to the application unchanged, so the
FastAPI route stays the one full implementation and the lane has no error handling of its
own beyond what can happen after it has started: a rate limit (429) and the access log
(5xx), rendered by the application's own problem handlers.

What the middleware it skips does for a response, the lane does for its own, with the same
functions: the request id (`broker.middleware`), the security headers (`broker.edge`) and
the request metrics.  A GET with a body is the edge middleware's to judge, so it passes.

The order of the read is the route's: rate limit, consent decision, access-log entry
committed, then the bytes.  The response headers come from the same function.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.agenthub.auth import bearer_of
from broker.edge import edge_settings, secured, with_security_headers
from broker.logging import request_id_var
from broker.middleware import count_request, request_id_of, scope_header
from broker.ops.metrics import read_counter
from broker.partners.ratelimit import PartnerRateLimiter
from broker.partners.reads import PartnerReads
from broker.partners.tokens import PartnerPrincipal, TokenCache
from broker.routers.partner import data_headers, etags, read_query
from cache.edge import HotReader
from cache.service import PageQuery, ServedPage
from consent.engine import Decision

DATA_PATH: Final = re.compile(r"/v1/schools/([^/]+)/data/([^/]+)")
DATA_ROUTE: Final = "/v1/schools/{school_id}/data/{area}"
_JSON: Final = (b"content-type", b"application/json")
_HEADERS_HELD: Final = 10_000


class PartnerReadLane:
    def __init__(self, app: ASGIApp, owner: Starlette) -> None:
        self.app = app  # the application's middleware stack
        self.owner = owner  # the application: its state, routes and problem handlers
        self._route: Any = None  # the FastAPI route, for metrics labels and handlers' view
        self._raw_headers: dict[tuple[Any, ...], list[tuple[bytes, bytes]]] = {}
        self._reads = read_counter("edge")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or _has_body(scope):
            await self.app(scope, receive, send)
            return
        found = DATA_PATH.fullmatch(scope["path"])
        if found is None or not await self._serve(scope, receive, send, *found.groups()):
            await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, school_id: str, area: str
    ) -> bool:
        """Answer the read and return True, or return False having done nothing at all."""
        try:
            held = self._held(scope, school_id, area)
        except Exception:  # the application reports it, whatever it is
            return False
        if held is None:
            return False
        # From here on the read is ours: every outcome is answered here.
        partner, query, decision, page, now = held
        started = time.perf_counter()
        scope["app"] = self.owner
        scope["route"] = self._data_route()
        scope["path_params"] = {"school_id": school_id, "area": area}
        rid = request_id_of(scope)
        token = request_id_var.set(rid)
        hsts = edge_settings(scope).sends_hsts
        status = 500
        try:
            try:
                state = self.owner.state
                limiter: PartnerRateLimiter = state.rate_limiter
                limiter.hit(partner.partner_id, partner.rate_limit_per_minute)
                not_modified = page.etag in etags(scope_header(scope, b"if-none-match"))
                count = 0 if not_modified else page.record_count
                reads: PartnerReads = state.partner_reads
                # Committed before a byte of the page is handed to the server.
                await reads.log(partner.partner_id, query, decision, count, rid, now)
            except Exception as exc:  # rendered as the route would render it
                status = await _problem(scope, receive, _stamped(send, rid, hsts), exc)
                return True
            raw = self._headers(decision, page, not_modified, hsts)
            raw.append((b"x-request-id", rid.encode()))
            status = 304 if not_modified else 200
            await send({"type": "http.response.start", "status": status, "headers": raw})
            if not_modified:
                await send({"type": "http.response.body", "body": b""})
                return True
            self._reads.inc()
            await send({"type": "http.response.body", "body": page.body})
            return True
        finally:
            count_request("GET", DATA_ROUTE, status, started)
            request_id_var.reset(token)

    def _held(
        self, scope: Scope, school_id: str, area: str
    ) -> tuple[PartnerPrincipal, PageQuery, Decision, ServedPage, datetime] | None:
        """(partner, narrowed query, decision, hot page, now) if all are in memory."""
        state = self.owner.state
        token = bearer_of(scope_header(scope, b"authorization") or "")
        tokens: TokenCache = state.token_cache
        partner = None if token is None else tokens.peek(token)
        if partner is None:
            return None
        try:
            query = read_query(school_id, area, scope["query_string"])
        except Exception:  # the route reports it, whatever it is
            return None
        reads: PartnerReads = state.partner_reads
        hot: HotReader | None = reads.hot_reader
        now = state.resources.clock.now()
        decision = reads.decisions.peek(partner.partner_id, query.school_id, query.area, now)
        if hot is None or decision is None or not decision.allowed:
            return None
        # Narrowed to the approved fields and admitted pupils (a page is named by them).
        projected = reads.projected(partner.partner_id, query, decision, now)[0]
        if projected is None:
            return None
        page = hot.held(projected, now)
        if page is None:
            return None
        return partner, projected, decision, page, now

    def _headers(
        self, decision: Decision, page: ServedPage, not_modified: bool, hsts: bool
    ) -> list[tuple[bytes, bytes]]:
        """The response's raw headers but its request id, built once per page and consent
        end (then copied: the request id is appended)."""
        key = (page.etag, page.stale, page.as_of, decision.ends_at, not_modified, hsts)
        raw = self._raw_headers.get(key)
        if raw is None:
            headers = data_headers(decision, page)
            raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            if not not_modified:
                raw += [_JSON, (b"content-length", str(len(page.body)).encode())]
            raw = secured(raw, no_store=True, hsts=hsts)  # a response to credentials
            if len(self._raw_headers) >= _HEADERS_HELD:
                self._raw_headers.clear()
            self._raw_headers[key] = raw
        return raw.copy()

    def _data_route(self) -> Any:
        if self._route is None:
            for route in self.owner.router.routes:
                if getattr(route, "path", None) == DATA_ROUTE:
                    self._route = route
                    break
        return self._route


def _has_body(scope: Scope) -> bool:
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


def _stamped(send: Send, rid: str, hsts: bool) -> Send:
    """`send` with the headers the skipped middleware would have added to a problem."""
    secured_send = with_security_headers(send, no_store=True, hsts=hsts)

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
        await secured_send(message)

    return send_with_id


async def _problem(scope: Scope, receive: Receive, send: Send, exc: Exception) -> int:
    """Render `exc` with the application's handler for it (as Starlette would choose);
    returns the status sent."""
    handlers = scope["app"].exception_handlers
    handler = next(
        (handlers[cls] for cls in type(exc).__mro__ if cls in handlers), handlers[Exception]
    )
    response = await handler(Request(scope, receive), exc)
    await response(scope, receive, send)
    return int(response.status_code)
