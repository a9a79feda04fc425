"""Partner read API: my schools, my consent, and data by area (auth: OAuth bearer token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from broker.admin.consents import partner_receipt
from broker.clock import Clock, rfc3339
from broker.db import session_scope
from broker.deps import get_clock, get_resources
from broker.errors import DomainError, NotFoundError
from broker.logging import request_id_var
from broker.partners.auth import PartnerDep
from broker.partners.ratelimit import PartnerRateLimiter
from broker.partners.reads import PartnerReads, ReadQuery, my_consent, my_schools
from broker.partners.tokens import PartnerPrincipal
from broker.resources import Resources
from broker.schools.models import School
from consent.areas import CATALOGUE, parse_instant

router = APIRouter(prefix="/v1", tags=["partner"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


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


async def get_reads(request: Request) -> PartnerReads:
    reads: PartnerReads = request.app.state.partner_reads
    return reads


async def get_limiter(request: Request) -> PartnerRateLimiter:
    limiter: PartnerRateLimiter = request.app.state.rate_limiter
    return limiter


async def limited_partner(
    partner: PartnerDep, limiter: Annotated[PartnerRateLimiter, Depends(get_limiter)]
) -> PartnerPrincipal:
    await limiter.hit(partner.partner_id, partner.rate_limit_per_minute)
    return partner


Partner = Annotated[PartnerPrincipal, Depends(limited_partner)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]
ClockDep = Annotated[Clock, Depends(get_clock)]


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
) -> ReadQuery:
    if area not in CATALOGUE:
        raise NotFoundError(f"no data area {area!r}: see GET /openapi.json or `misbroker areas`")
    since = None
    if updated_since is not None:
        since = parse_instant(updated_since)
        if since is None:
            raise InvalidQueryError("updated_since must be an RFC 3339 time with an offset")
    return ReadQuery(school_id, area, _parse_fields(area, fields), since, limit, cursor)


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
        429: PROBLEM,
        503: PROBLEM,
    },
)
async def read_area(
    request: Request,
    school_id: str,
    area: str,
    partner: Partner,
    reads: Annotated[PartnerReads, Depends(get_reads)],
    clock: ClockDep,
    fields: Annotated[str | None, Query(description="Comma-separated projection")] = None,
    updated_since: Annotated[str | None, Query(description="RFC 3339: changes after")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    query = _query(school_id, area, fields, updated_since, limit, cursor)
    now = clock.now()
    rid = request_id_var.get() or ""
    decision = await reads.decide(partner.partner_id, query, rid, now)
    headers = {"Cache-Control": "private, no-cache"}
    if decision.ends_at is not None:
        headers["X-Consent-Ends-At"] = rfc3339(decision.ends_at)
    page = await run_in_threadpool(reads.fetch, partner.partner_id, query, decision, now)
    if page is None:
        await reads.log(partner.partner_id, query, decision, 0, rid, now)
        headers["Retry-After"] = "60"
        return JSONResponse({"state": "fetching"}, status_code=202, headers=headers)
    headers |= {
        "ETag": page.etag,
        "X-Data-As-Of": rfc3339(page.as_of),
        "X-Data-Stale": "true" if page.stale else "false",
    }
    if page.etag in _etags(request.headers.get("if-none-match")):
        await reads.log(partner.partner_id, query, decision, 0, rid, now)
        return Response(status_code=304, headers=headers)
    # The entry is committed before the body is handed to the server: no log, no data.
    await reads.log(partner.partner_id, query, decision, page.record_count, rid, now)
    return Response(page.body, media_type="application/json", headers=headers)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
