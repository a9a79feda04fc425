"""The partner read fast lane: a steady-state data read answered without FastAPI's
per-request machinery (routing, dependency solving, request and response objects), which
costs more than serving the hot page itself.

A pure ASGI middleware in front of the router.  It takes a `GET` of
`/v1/schools/{school_id}/data/{area}` only when everything the answer needs is already in
this process's memory: the access token, a valid query, an *allowed* consent decision and
the sealed hot page with its data key.  Anything else (a first read, an unknown token, a
refusal, a page not held, a malformed query) passes to the FastAPI route unchanged, so
the route stays the one full implementation and the lane has no error handling of its own
beyond what can happen after it has started: a rate limit (429) and the access log (5xx),
rendered by the application's own problem handlers.

The order of the read is the route's: rate limit, consent decision, access-log entry
committed, then the bytes.  The response headers come from the same function.
"""

from __future__ import annotations

import re
from typing import Any, Final

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.agenthub.auth import bearer_of
from broker.logging import request_id_var
from broker.middleware import scope_header
from broker.ops.metrics import read_counter
from broker.partners.ratelimit import PartnerRateLimiter
from broker.partners.reads import PartnerReads
from broker.partners.tokens import TokenCache
from broker.routers.partner import data_headers, etags, read_query
from cache.edge import HotReader
from cache.service import ServedPage
from consent.engine import Decision

DATA_PATH: Final = re.compile(r"/v1/schools/([^/]+)/data/([^/]+)")
_JSON: Final = (b"content-type", b"application/json")
_HEADERS_HELD: Final = 10_000


class PartnerReadLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None  # the FastAPI route, for metrics labels and handlers' view
        self._raw_headers: dict[tuple[Any, ...], list[tuple[bytes, bytes]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        found = DATA_PATH.fullmatch(scope["path"])
        if found is None or not await self._serve(scope, receive, send, *found.groups()):
            await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, school_id: str, area: str
    ) -> bool:
        """Answer the read and return True, or return False having done nothing at all."""
        state = scope["app"].state
        token = bearer_of(scope_header(scope, b"authorization") or "")
        tokens: TokenCache = state.token_cache
        partner = None if token is None else tokens.peek(token)
        if partner is None:
            return False
        try:
            query = read_query(school_id, area, scope["query_string"])
        except Exception:  # the route reports it, whatever it is
            return False
        reads: PartnerReads = state.partner_reads
        hot: HotReader | None = reads.hot_reader
        now = state.resources.clock.now()
        decision = reads.decisions.peek(partner.partner_id, query.school_id, query.area, now)
        if hot is None or decision is None or not decision.allowed:
            return False
        # Narrowed to the approved fields and admitted pupils (a page is named by them).
        projected = reads.projected(partner.partner_id, query, decision, now)[0]
        if projected is None:
            return False
        query = projected
        page = hot.held(query, now)
        if page is None:
            return False
        # From here on the read is ours: every outcome is answered here.
        scope["route"] = self._data_route(scope)
        scope["path_params"] = {"school_id": school_id, "area": area}
        try:
            limiter: PartnerRateLimiter = state.rate_limiter
            limiter.hit(partner.partner_id, partner.rate_limit_per_minute)
            not_modified = page.etag in etags(scope_header(scope, b"if-none-match"))
            count = 0 if not_modified else page.record_count
            rid = request_id_var.get() or ""
            # Committed before a byte of the page is handed to the server.
            await reads.log(partner.partner_id, query, decision, count, rid, now)
        except Exception as exc:  # rendered as the route would render it
            await _problem(scope, receive, send, exc)
            return True
        raw = self._headers(decision, page, not_modified)
        if not_modified:
            await send({"type": "http.response.start", "status": 304, "headers": raw})
            await send({"type": "http.response.body", "body": b""})
            return True
        read_counter("edge").inc()
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": page.body})
        return True

    def _headers(
        self, decision: Decision, page: ServedPage, not_modified: bool
    ) -> list[tuple[bytes, bytes]]:
        """The response's raw headers, built once per page and consent end (then copied:
        the server's middleware appends to the list)."""
        key = (page.etag, page.stale, page.as_of, decision.ends_at, not_modified)
        raw = self._raw_headers.get(key)
        if raw is None:
            headers = data_headers(decision, page)
            raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            if not not_modified:
                raw += [_JSON, (b"content-length", str(len(page.body)).encode())]
            if len(self._raw_headers) >= _HEADERS_HELD:
                self._raw_headers.clear()
            self._raw_headers[key] = raw
        return raw.copy()

    def _data_route(self, scope: Scope) -> Any:
        if self._route is None:
            for route in scope["app"].router.routes:
                if getattr(route, "path", None) == "/v1/schools/{school_id}/data/{area}":
                    self._route = route
                    break
        return self._route


async def _problem(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Render `exc` with the application's handler for it (as Starlette would choose)."""
    handlers = scope["app"].exception_handlers
    handler = next(
        (handlers[cls] for cls in type(exc).__mro__ if cls in handlers), handlers[Exception]
    )
    response = await handler(Request(scope, receive), exc)
    await response(scope, receive, send)
