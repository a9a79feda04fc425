"""RFC 9457 problem details: the one renderer for every error the HTTP API returns."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from broker.errors import DomainError
from broker.logging import request_id_var
from cache.errors import CacheError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
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
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


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


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return problem_response(
        500,
        slug="internal-error",
        title="Internal server error",
        detail="an unexpected error occurred; quote the request id when reporting it",
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(CacheError, _cache_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
