"""The edge: request bodies bounded before anything reads them, and the headers every
response carries.

A pure ASGI middleware between the request-id middleware and the partner read lane.  A
request without a body (every partner read) costs one walk over its headers and a send
wrapper; no task, no copy.

Bodies.  A request declaring more than its route's limit is answered 413 before
authentication or parsing; a body at most `DRAIN_BYTES` over the limit is read and discarded
first, so a client that sends before it reads still gets the answer, and a larger one is not
read at all (the connection is closed).  The agent's upload (one, or a sequence) has its own,
larger limit (`upload_max_compressed_bytes`) and is streamed to its handler, which
authenticates the agent first; a chunked upload that streams past the limit is stopped
in `receive`.  Every other body (`body_max_bytes`, 64 KiB by default) is read here up to
the limit and handed on whole; a JSON one is parsed here once (orjson) and refused if it
nests deeper than `json_max_depth` or holds an array longer than `upload_max_records`.

Headers.  `X-Content-Type-Options: nosniff` on every response; `Cache-Control: no-store`
on every answer to a request that carried credentials and on the token endpoints (a
route's own Cache-Control wins, e.g. the partner reads' `private, no-cache`); HSTS when
the broker serves TLS itself or `MISBROKER_HSTS=true` says TLS terminates in front.
Headers a response already has (the console sets its own) are left alone.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Final

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.errors import PayloadTooLargeError
from broker.jsonlimits import shape_problem
from broker.problems import problem_response
from broker.settings import BrokerSettings

UPLOAD_PATH: Final = "/v1/agent/uploads"
# The agent's uploads, alone or several in one request: the larger, streamed limit.
UPLOAD_PATHS: Final = frozenset({UPLOAD_PATH, f"{UPLOAD_PATH}/sequence"})
# A write of 1000 records (at most 2 KiB each as the catalogue's strings allow in practice).
WRITE_BODY_MAX_BYTES: Final = 2 * 1024 * 1024
# Responses that carry a token even to a request without credentials.
TOKEN_PATHS: Final = frozenset({"/oauth/token", "/v1/admin/login"})
HSTS_VALUE: Final = b"max-age=31536000; includeSubDomains"
_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
_NO_STORE: Final = (b"cache-control", b"no-store")
# Content-Length of more digits than this is over any limit (and int() of 5,000 digits raises).
_MAX_LENGTH_DIGITS: Final = 15
# How much of an oversized body is read and thrown away so the client can read its 413;
# past this the connection is closed instead.  Nothing drained is kept.
DRAIN_BYTES: Final = 1024 * 1024
_DEFAULTS: Final = BrokerSettings()


class EdgeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = edge_settings(scope)
        length: bytes | None = None
        has_body = credentials = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length, has_body = value, value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"authorization":
                credentials = True
        send = with_security_headers(
            send, credentials or scope["path"] in TOKEN_PATHS, settings.sends_hsts
        )
        if not has_body:
            await self.app(scope, receive, send)
            return
        upload = scope["path"] in UPLOAD_PATHS
        limit = settings.upload_max_compressed_bytes if upload else settings.body_max_bytes
        if _write_path(scope["path"]):
            limit = max(limit, WRITE_BODY_MAX_BYTES)
        if length is not None and _over(length, limit):
            # Read a small excess and throw it away, so a client that writes its whole body
            # before reading (most do) gets the 413 rather than a reset connection.
            drained = not upload and not _over(length, limit + DRAIN_BYTES)
            if drained:
                drained = await _drain(receive, limit + DRAIN_BYTES)
            await _too_large(limit, close=not drained)(scope, receive, send)
            return
        if upload:
            await self.app(scope, _counting(receive, limit), send)
            return
        body = await _read(receive, limit)
        if not isinstance(body, bytes):
            await _too_large(limit, close=body is _Over.UNREAD)(scope, receive, send)
            return
        problem = _json_problem(scope, body, settings)
        if problem is not None:
            await problem_response(
                422, slug="invalid-input", title="Invalid input", detail=problem
            )(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def edge_settings(scope: Scope) -> BrokerSettings:
    resources = getattr(scope["app"].state, "resources", None)
    return _DEFAULTS if resources is None else resources.settings.broker


def _write_path(path: str) -> bool:
    """A partner's write or an agent's write results: up to 1000 records, more than 64 KiB."""
    return (path.startswith("/v1/schools/") and "/writes/" in path) or (
        path.startswith("/v1/agent/writes/") and path.endswith("/results")
    )


def _over(length: bytes, limit: int) -> bool:
    if not length.isdigit() or len(length) > _MAX_LENGTH_DIGITS:
        return len(length) > _MAX_LENGTH_DIGITS  # malformed: the server refuses it anyway
    return int(length) > limit


def _too_large(limit: int, *, close: bool) -> ASGIApp:
    return problem_response(
        413,
        slug="payload-too-large",
        title="Payload too large",
        detail=f"request body over {limit} bytes",
        # The rest of an undrained body is still on the wire: the connection cannot be reused.
        headers={"Connection": "close"} if close else None,
        limit_bytes=limit,
    )


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and discard the rest of the body: True if it ended within `budget` bytes."""
    size = 0
    while size <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return False
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return size <= budget
    return False


class _Over(enum.Enum):
    """A body over its limit: thrown away to its end, or with more still unread."""

    DRAINED = enum.auto()
    UNREAD = enum.auto()


async def _read(receive: Receive, limit: int) -> bytes | _Over:
    """The whole body, or, once it passes `limit`, what became of the rest of it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # disconnected: the app sees an empty body and the send goes nowhere
        chunk = message.get("body", b"")
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit:
            chunks.clear()
            if not more:
                return _Over.DRAINED
            return _Over.DRAINED if await _drain(receive, DRAIN_BYTES) else _Over.UNREAD
        chunks.append(chunk)
        if not more:
            break
    return b"".join(chunks)


def _json_problem(scope: Scope, body: bytes, settings: BrokerSettings) -> str | None:
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.lower()
            break
    if b"json" not in content_type:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):  # orjson stops at 1024
            return f"JSON nested deeper than {settings.json_max_depth} levels"
        return None  # the route says what is wrong with it, as it always has
    return shape_problem(
        doc, max_depth=settings.json_max_depth, max_items=settings.upload_max_records
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _counting(receive: Receive, limit: int) -> Receive:
    """`receive`, stopping the request with a 413 problem once more than `limit` arrived."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise PayloadTooLargeError(f"request body over {limit} bytes", limit_bytes=limit)
        return message

    return counted


def secured(
    headers: Iterable[tuple[bytes, bytes]], no_store: bool, hsts: bool
) -> list[tuple[bytes, bytes]]:
    """`headers` and the security headers every response carries, where not set already.
    `no_store`: a response to credentials, or one that carries a token."""
    out = list(headers)
    names = {name.lower() for name, _ in out}
    if b"x-content-type-options" not in names:
        out.append(_NOSNIFF)
    if no_store and b"cache-control" not in names:
        out.append(_NO_STORE)
    if hsts and b"strict-transport-security" not in names:
        out.append((b"strict-transport-security", HSTS_VALUE))
    return out


def with_security_headers(send: Send, no_store: bool, hsts: bool) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = secured(message.get("headers", []), no_store, hsts)
        await send(message)

    return send_with_headers


class HeadersOnPaths:
    """Adds `headers` to every response under `prefixes` that does not set them itself:
    the security headers of static assets, which no route handler stamps."""

    def __init__(
        self, app: ASGIApp, *, prefixes: tuple[str, ...], headers: Mapping[str, str]
    ) -> None:
        self.app = app
        self.prefixes = prefixes
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                names = {name.lower() for name, _ in headers}
                missing = [(k, v) for k, v in self.headers if k not in names]
                message["headers"] = [*headers, *missing]
            await send(message)

        await self.app(scope, receive, send_with_headers)
