"""RFC 9457 problem details: the one renderer for every error the HTTP API returns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from broker.errors import DomainError
from broker.logging import request_id_var
from cache.blobs import BlobStoreError
from cache.errors import CacheError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; some problems add members, named in API.md",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}
_FASTAPI_VALIDATION_ERROR = "#/components/schemas/HTTPValidationError"


def problem_response(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = problem_body(status, slug=slug, title=title, detail=detail, **extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def problem_body(
    status: int, *, slug: str, title: str, detail: str, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    rid = request_id_var.get()
    if rid is not None:
        body["request_id"] = rid
    body.update(extra)
    return body


# 4xx statuses that are not about a request's content: the same content may succeed later.
_NOT_CONTENT: frozenset[int] = frozenset({401, 403, 408, 425, 429})


def content_problem(exc: Exception) -> dict[str, Any] | None:
    """The problem body of an error in a request's content, or None for any other error.

    For an answer that carries several outcomes in one body (an agent's upload sequence):
    content the broker refused is answered there, item by item; anything else (a server
    fault, a service down, a rate limit) fails the whole request, as it would fail one.
    """
    if isinstance(exc, DomainError):
        status, slug, title, detail, extra = exc.status, exc.slug, exc.title, exc.detail, exc.extra
    elif isinstance(exc, CacheError):
        status, slug, title, detail, extra = exc.status, exc.slug, exc.title, str(exc), {}
    else:
        return None
    if not 400 <= status < 500 or status in _NOT_CONTENT:
        return None
    return problem_body(status, slug=slug, title=title, detail=detail, **extra)


async def _domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return problem_response(
        exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers or None,
        **exc.extra,
    )


async def _cache_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, CacheError)
    if exc.status >= 500:
        log.error("cache error", exc_info=exc)
    return problem_response(exc.status, slug=exc.slug, title=exc.title, detail=str(exc))


async def _backing_service_down(_: Request, exc: Exception) -> Response:
    # Redis or the blob store restarting or unreachable: the client may try again in a
    # moment, and gets a problem it can act on instead of a 500.
    log.warning("backing service unavailable: %s", type(exc).__name__)
    return unavailable_response("a service the broker needs is not answering: try again shortly")


def unavailable_response(detail: str) -> Response:
    """503 with Retry-After: the client may try again in a moment."""
    return problem_response(
        503,
        slug="unavailable",
        title="Service unavailable",
        detail=detail,
        headers={"Retry-After": "1"},
    )


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"location": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"location": "", "message": "invalid request"}
    return problem_response(
        422,
        slug="invalid-input",
        title="Invalid input",
        detail=f"{first['location']}: {first['message']}",
        errors=errors,
    )


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    slug = phrase.lower().replace(" ", "-").replace("'", "")
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    return problem_response(
        exc.status_code, slug=slug, title=phrase, detail=detail, headers=exc.headers
    )


def internal_error_response() -> Response:
    """The last-resort 500 problem (the request id middleware sends it, with the id)."""
    return problem_response(
        500,
        slug="internal-error",
        title="Internal server error",
        detail="an unexpected error occurred; quote the request id when reporting it",
        # Sent outside the edge middleware, so its headers are set here.
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


def is_database_busy(exc: OperationalError) -> bool:
    """SQLite's "database is locked" (or busy): a writer outlasted the busy timeout."""
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text


def is_database_unreachable(exc: OperationalError) -> bool:
    """PostgreSQL refusing, dropping or shutting down connections (a restart, a failover)."""
    return exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)


async def _database_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OperationalError)
    if is_database_unreachable(exc):
        log.warning("database not answering: answered 503")
        return unavailable_response("the database is not answering: try again shortly")
    if not is_database_busy(exc):
        raise exc  # on to the request id middleware and the 500 it answers, as before
    # Writers queue on SQLite's lock for the busy timeout; past it the client is told to
    # come back rather than shown a 500 (the load is the problem, not its request).
    log.warning("database busy past the timeout: answered 503")
    return unavailable_response("the database is busy: try again in a moment")


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    # Called by Starlette's outermost middleware, after the request id middleware has sent
    # `internal_error_response()` with the id; only its log line reaches anyone.
    log.error("unhandled error", exc_info=exc)
    return internal_error_response()


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(CacheError, _cache_error)
    app.add_exception_handler(RedisConnectionError, _backing_service_down)
    app.add_exception_handler(RedisTimeoutError, _backing_service_down)
    app.add_exception_handler(BlobStoreError, _backing_service_down)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    _document_problems(app)


def _document_problems(app: FastAPI) -> None:
    """Make `/openapi.json` say what the handlers above send for every error: a problem.

    FastAPI documents its own 422 body (`HTTPValidationError`, `application/json`) and a
    route's `responses` name only a media type; the handlers send `application/problem+json`
    bodies of one shape.  A body that cannot be parsed at all is FastAPI's 400.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI after the first call; the edits are idempotent
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                _problem_responses(operation)
        if _FASTAPI_VALIDATION_ERROR.encode() not in orjson.dumps(schema.get("paths", {})):
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_responses(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "requestBody" in operation and "400" not in responses:
        responses["400"] = {"description": "The body could not be parsed"}
    for code, response in responses.items():
        if not code.isdigit() or int(code) < 400:
            continue
        content = response.get("content") or {}
        fastapi_default = (
            content.get("application/json", {}).get("schema", {}).get("$ref")
            == _FASTAPI_VALIDATION_ERROR
        )
        if content and PROBLEM_MEDIA_TYPE not in content and not fastapi_default:
            continue  # the route documents another body on purpose (OAuth's errors)
        response.setdefault("description", HTTPStatus(int(code)).phrase)
        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}}
