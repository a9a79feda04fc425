"""Partner read API: my schools, my consent, and data by area (auth: OAuth bearer token)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse, Response

from broker.admin.consents import partner_receipt
from broker.clock import Clock, rfc3339
from broker.db import session_scope
from broker.deps import get_clock, get_resources
from broker.errors import DomainError, NotFoundError
from broker.logging import request_id_var
from broker.ops.metrics import read_counter
from broker.partners.auth import PartnerDep, authenticate_partner
from broker.partners.ratelimit import PartnerRateLimiter
from broker.partners.reads import PartnerReads, my_consent, my_schools
from broker.partners.tokens import PartnerPrincipal
from broker.resources import Resources
from broker.schools.models import School
from cache.service import PageQuery, ServedPage
from consent.areas import CATALOGUE, parse_instant
from consent.engine import Decision

router = APIRouter(prefix="/v1", tags=["partner"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_INTEGER = re.compile(r"[+-]?[0-9]+")


class UnknownFieldError(DomainError):
    status = 400
    slug = "unknown-field"
    title = "Unknown field"


class InvalidQueryError(DomainError):
    status = 400
    slug = "invalid-query"
    title = "Invalid query"


class ConsentSummary(BaseModel):
    status: str
    areas: list[str]
    ends_at: str | None


class SchoolEntry(BaseModel):
    school_id: str
    name: str
    dfe_number: str
    consent: ConsentSummary


class SchoolList(BaseModel):
    data: list[SchoolEntry]


class MyConsent(BaseModel):
    consent_id: str
    status: str
    areas: list[str]
    mode: str
    granted_at: str
    ends_at: str | None


class PageMeta(BaseModel):
    as_of: str
    stale: bool
    next_cursor: str | None


class DataPage(BaseModel):
    data: list[dict[str, Any]]
    meta: PageMeta


class Fetching(BaseModel):
    state: str = "fetching"


async def get_limiter(request: Request) -> PartnerRateLimiter:
    limiter: PartnerRateLimiter = request.app.state.rate_limiter
    return limiter


async def limited_partner(
    partner: PartnerDep, limiter: Annotated[PartnerRateLimiter, Depends(get_limiter)]
) -> PartnerPrincipal:
    limiter.hit(partner.partner_id, partner.rate_limit_per_minute)
    return partner


Partner = Annotated[PartnerPrincipal, Depends(limited_partner)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def _parse_fields(area: str, fields: str | None) -> frozenset[str] | None:
    if fields is None:
        return None
    names = frozenset(f.strip() for f in fields.split(",") if f.strip()) - {"id"}
    unknown = sorted(names - set(CATALOGUE[area].field_names))
    if unknown:
        raise UnknownFieldError(
            f"unknown field(s) for {area}: {', '.join(unknown)}", unknown_fields=unknown
        )
    return names


def _query(
    school_id: str,
    area: str,
    fields: str | None,
    updated_since: str | None,
    limit: int,
    cursor: str | None,
) -> PageQuery:
    if area not in CATALOGUE:
        raise NotFoundError(f"no data area {area!r}: see GET /openapi.json or `misbroker areas`")
    since = None
    if updated_since is not None:
        since = parse_instant(updated_since)
        if since is None:
            raise InvalidQueryError("updated_since must be an RFC 3339 time with an offset")
    return PageQuery(school_id, area, _parse_fields(area, fields), since, limit, cursor)


# The data route is the hot path: its query is read by hand (FastAPI's per-parameter
# dependency solving costs more than serving a hot page) and documented here instead.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_CURSOR_LENGTH = 2000
DATA_PARAMETERS: list[dict[str, Any]] = [
    {"name": "school_id", "in": "path", "required": True, "schema": {"type": "string"}},
    {
        "name": "area",
        "in": "path",
        "required": True,
        "description": "A data area of the catalogue, such as students.basic",
        "schema": {"type": "string"},
    },
    {
        "name": "fields",
        "in": "query",
        "required": False,
        "description": "Comma-separated projection (id is always included)",
        "schema": {"type": "string"},
    },
    {
        "name": "updated_since",
        "in": "query",
        "required": False,
        "description": "RFC 3339 time with an offset: only records changed (or deleted) after",
        "schema": {"type": "string"},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Records per page",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "`meta.next_cursor` of the previous page",
        "schema": {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
    },
]


_QUERIES_HELD = 10_000
_QUERY_KEY_MAX = 512  # a longer query (or school id) is parsed each time, never remembered
_queries: dict[tuple[str, str, bytes], PageQuery] = {}


def read_query(school_id: str, area: str, query_string: bytes) -> PageQuery:
    """The parsed query, remembered: partners repeat the same few queries (invalid ones
    raise, and are not remembered)."""
    key = (school_id, area, query_string)
    found = _queries.get(key)
    if found is None:
        params = QueryParams(query_string)
        found = _query(
            school_id,
            area,
            params.get("fields"),
            params.get("updated_since"),
            _limit(params.get("limit")),
            _cursor(params.get("cursor")),
        )
        if len(query_string) + len(school_id) <= _QUERY_KEY_MAX:  # memory stays bounded
            if len(_queries) >= _QUERIES_HELD:
                _queries.clear()
            _queries[key] = found
    return found


def _invalid(name: str, message: str, kind: str, value: str) -> RequestValidationError:
    """The error FastAPI raises for a bad parameter, so the problem has the same shape.

    `limit` is read as a plain decimal integer: "1.0" or "1_000" are refused.
    """
    return RequestValidationError(
        [{"type": kind, "loc": ("query", name), "msg": message, "input": value}]
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    text = raw.strip()
    if not _INTEGER.fullmatch(text):
        raise _invalid(
            "limit", "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing", raw,
        )  # fmt: skip
    # Python refuses int() of over 4,300 digits; any number this long is out of range anyway.
    value = int(text) if len(text) <= 12 else (-1 if text.startswith("-") else MAX_LIMIT + 1)
    if value < 1:
        raise _invalid(
            "limit", "Input should be greater than or equal to 1", "greater_than_equal", raw
        )
    if value > MAX_LIMIT:
        raise _invalid(
            "limit", f"Input should be less than or equal to {MAX_LIMIT}", "less_than_equal", raw
        )
    return value


def _cursor(raw: str | None) -> str | None:
    if raw is not None and len(raw) > MAX_CURSOR_LENGTH:
        raise _invalid(
            "cursor", f"String should have at most {MAX_CURSOR_LENGTH} characters",
            "string_too_long", raw[:100],
        )  # fmt: skip
    return raw


@router.get(
    "/schools/{school_id}/data/{area}",
    response_model=DataPage,
    summary="Records of one data area (consent checked and logged before data leaves)",
    responses={
        202: {"model": Fetching, "description": "Consented but not cached yet: fetching"},
        304: {"description": "Not modified (If-None-Match)"},
        400: PROBLEM,
        401: PROBLEM,
        403: PROBLEM,
        404: PROBLEM,
        422: PROBLEM,
        429: PROBLEM,
        503: PROBLEM,
    },
    openapi_extra={"parameters": DATA_PARAMETERS},
)
async def read_area(request: Request) -> Response:
    state = request.app.state
    partner = await authenticate_partner(request)
    limiter: PartnerRateLimiter = state.rate_limiter
    limiter.hit(partner.partner_id, partner.rate_limit_per_minute)
    path = request.path_params
    query = read_query(path["school_id"], path["area"], request.scope["query_string"])
    reads: PartnerReads = state.partner_reads
    now = state.resources.clock.now()
    rid = request_id_var.get() or ""
    decision = await reads.decide(partner.partner_id, query, rid, now)
    query = await reads.project(partner.partner_id, query, decision, rid, now)
    page = await reads.fetch_hot(query, now)
    if page is None:
        page = await run_in_threadpool(reads.fetch, partner.partner_id, query, decision, now)
    headers = data_headers(decision, page)
    if page is None:
        await reads.log(partner.partner_id, query, decision, 0, rid, now)
        headers["Retry-After"] = "60"
        return JSONResponse({"state": "fetching"}, status_code=202, headers=headers)
    if page.etag in etags(request.headers.get("if-none-match")):
        await reads.log(partner.partner_id, query, decision, 0, rid, now)
        return Response(status_code=304, headers=headers)
    # The entry is committed before the body is handed to the server: no log, no data.
    await reads.log(partner.partner_id, query, decision, page.record_count, rid, now)
    read_counter(page.source).inc()
    return Response(page.body, media_type="application/json", headers=headers)


def data_headers(decision: Decision, page: ServedPage | None) -> dict[str, str]:
    """The headers of a data response (shared with `broker.partners.lane`)."""
    headers = {"Cache-Control": "private, no-cache"}
    if decision.ends_at is not None:
        headers["X-Consent-Ends-At"] = rfc3339(decision.ends_at)
    if page is not None:
        headers["ETag"] = page.etag
        headers["X-Data-As-Of"] = rfc3339(page.as_of)
        headers["X-Data-Stale"] = "true" if page.stale else "false"
    return headers


def etags(header: str | None) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compared as strong)."""
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


@router.get(
    "/schools",
    response_model=SchoolList,
    summary="Schools with a consent, past or present, for me",
    responses={401: PROBLEM, 429: PROBLEM},
)
async def list_schools(partner: Partner, resources: ResourcesDep, clock: ClockDep) -> Any:
    def load() -> list[dict[str, Any]]:
        with session_scope(resources.engine) as session:
            grace = resources.settings.consent.revocation_grace
            return my_schools(session, partner.partner_id, clock.now(), grace)

    return {"data": await run_in_threadpool(load)}


@router.get(
    "/schools/{school_id}/consent",
    response_model=MyConsent,
    summary="My consent with this school",
    responses={401: PROBLEM, 404: PROBLEM, 429: PROBLEM},
)
async def get_my_consent(
    school_id: str, partner: Partner, resources: ResourcesDep, clock: ClockDep
) -> Any:
    def load() -> dict[str, Any] | None:
        with session_scope(resources.engine) as session:
            grace = resources.settings.consent.revocation_grace
            return my_consent(session, partner.partner_id, school_id, clock.now(), grace)

    consent = await run_in_threadpool(load)
    if consent is None:
        raise NotFoundError(f"no consent with school {school_id!r}")
    return consent


@router.get(
    "/schools/{school_id}/consent/receipt",
    summary="The receipt of my consent with this school",
    responses={401: PROBLEM, 404: PROBLEM, 429: PROBLEM},
)
async def get_my_receipt(
    school_id: str, partner: Partner, resources: ResourcesDep, clock: ClockDep
) -> dict[str, Any]:
    def load() -> dict[str, Any] | None:
        with session_scope(resources.engine) as session:
            school = session.get(School, school_id)
            if school is None:
                return None
            return partner_receipt(
                session,
                school=school,
                partner_id=partner.partner_id,
                now=clock.now(),
                grace=resources.settings.consent.revocation_grace,
            )

    receipt = await run_in_threadpool(load)
    if receipt is None:
        raise NotFoundError(f"no consent with school {school_id!r}")
    return receipt
