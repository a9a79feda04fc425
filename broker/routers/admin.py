"""School admin API: login, partners, consents, decisions at any time, the access log."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from broker.admin.deps import (
    AdminDep,
    CurrentAdminDep,
    bearer,
    perform_login,
    perform_logout,
)
from broker.admin.schemas import (
    AccessLogEntryOut,
    AccessLogMeta,
    AccessLogOut,
    AudienceIn,
    ChangeAreasIn,
    ConsentListOut,
    ConsentOut,
    DecisionOut,
    GrantIn,
    Instant,
    LoginIn,
    LoginOut,
    PartnerListOut,
    PartnerOut,
    ReadsAfterEndOut,
    ReceiptOut,
    RestrictionIn,
    RestrictionOut,
    ResumeIn,
    RevokeIn,
    SuspendIn,
)
from broker.cache_wiring import build_keyring
from broker.consent_wiring import ConsentRuntime, RuntimeDep
from broker.db import session_scope
from broker.errors import InvalidInputError
from broker.schools import restrictions
from cache.keys import KeyRing
from consent.access_log import MAX_PAGE, LogFilter, iter_csv, list_entries
from consent.areas import CATALOGUE

router = APIRouter(prefix="/v1/admin", tags=["school admin"])


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {}}}


Responses = dict[int | str, dict[str, Any]]
AUTH: Responses = {
    401: _problem("No admin token, or it is unknown or expired"),
    403: _problem("The credential is not a school admin's (a partner's or an agent's)"),
}
READ: Responses = {**AUTH, 422: _problem("Invalid input")}
ONE: Responses = {**AUTH, 404: _problem("No such consent in this school")}
CHANGE: Responses = {
    **ONE,
    409: _problem("The consent's state forbids it"),
    422: _problem("Breaks a rule"),
}

AreaQuery = Annotated[
    list[str], Query(description="An area; repeat it or give a comma list for several")
]
AwareDatetimeQuery = Annotated[
    Instant | None, Query(description="RFC 3339 with an offset, e.g. 2026-11-23T09:00:00Z")
]


@router.post(
    "/login",
    summary="Sign in with email, password and TOTP code",
    responses={
        401: _problem("Wrong email, password or code"),
        422: _problem("Invalid input"),
        429: _problem("Locked after too many failures, or too many attempts; see Retry-After"),
        503: _problem("Too many sign-ins at once; see Retry-After"),
    },
)
def login(body: LoginIn, runtime: RuntimeDep, request: Request) -> LoginOut:
    client_ip = request.client.host if request.client is not None else "unknown"
    outcome = perform_login(runtime, body.email, body.password, body.totp, client_ip)
    assert outcome.token is not None
    assert outcome.school_id is not None
    assert outcome.expires_at is not None
    return LoginOut(token=outcome.token, school_id=outcome.school_id, expires_at=outcome.expires_at)


@router.post(
    "/logout",
    status_code=204,
    summary="Sign out: the bearer token stops working at once",
    responses=AUTH,
)
async def logout(
    _admin: CurrentAdminDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    runtime: RuntimeDep,
) -> Response:
    assert credentials is not None  # current_admin let a live admin token through
    await run_in_threadpool(perform_logout, runtime, credentials.credentials)
    return Response(status_code=204)


@router.get(
    "/partners", summary="Every partner, what it requests and why, and my consent", responses=AUTH
)
def partners(ctx: AdminDep) -> PartnerListOut:
    return PartnerListOut(data=[PartnerOut.of(item) for item in ctx.consents.overview()])


@router.post("/consents", status_code=201, summary="Grant a consent", responses=CHANGE)
def grant_consent(body: GrantIn, ctx: AdminDep) -> ConsentOut:
    return ConsentOut.of(ctx.consents.grant(body.partner_id, body.areas, body.mode, body.fields))


@router.get("/consents", summary="My school's consents, newest first", responses=AUTH)
def list_consents(ctx: AdminDep) -> ConsentListOut:
    return ConsentListOut(data=[ConsentOut.of(view) for view in ctx.consents.all()])


@router.get("/consents/{consent_id}", summary="One consent with its history", responses=ONE)
def get_consent(consent_id: str, ctx: AdminDep) -> ConsentOut:
    return ConsentOut.of(ctx.consents.get(consent_id), with_events=True)


@router.patch(
    "/consents/{consent_id}",
    summary="Change the areas and/or approved fields (removed ones are revoked)",
    responses=CHANGE,
)
def change_areas(consent_id: str, body: ChangeAreasIn, ctx: AdminDep) -> ConsentOut:
    if body.areas is None and body.fields is None:
        raise InvalidInputError("give areas, fields or both")
    return ConsentOut.of(ctx.consents.change(consent_id, body.areas, body.fields))


@router.put(
    "/consents/{consent_id}/audience",
    summary="Which pupils the partner is shared (year groups, pupils in, pupils out)",
    # Its pupil lists can pass the 64 KiB body limit.
    responses={**CHANGE, 413: _problem("Body over the limit")},
)
def set_audience(consent_id: str, body: AudienceIn, ctx: AdminDep) -> ConsentOut:
    return ConsentOut.of(ctx.consents.set_audience(consent_id, body.audience()))


@router.post(
    "/students/{student_id}/restriction",
    summary="Share this pupil's data with no partner (e.g. safeguarding)",
    responses=READ,
)
def restrict_student(
    student_id: str, body: RestrictionIn, ctx: AdminDep, runtime: RuntimeDep
) -> RestrictionOut:
    out = restrictions.restrict(
        ctx.session,
        _keyring(runtime),
        school_id=ctx.school.id,
        student_id=student_id,
        reason=body.reason,
        actor=ctx.admin.actor,
        now=ctx.now,
    )
    ctx.consents.restriction_changed()
    return RestrictionOut.model_validate(out)


@router.delete(
    "/students/{student_id}/restriction",
    summary="Lift a pupil's restriction",
    responses={**READ, 404: _problem("The pupil is not restricted")},
)
def lift_restriction(student_id: str, ctx: AdminDep, runtime: RuntimeDep) -> RestrictionOut:
    restrictions.lift(
        ctx.session, _keyring(runtime), school_id=ctx.school.id, student_id=student_id, now=ctx.now
    )
    ctx.consents.restriction_changed()
    return RestrictionOut(student_id=student_id, restricted=False)


def _keyring(runtime: ConsentRuntime) -> KeyRing:
    return build_keyring(runtime.resources)


@router.post("/consents/{consent_id}/revoke", summary="Revoke with an end date", responses=CHANGE)
def revoke_consent(consent_id: str, body: RevokeIn, ctx: AdminDep) -> ConsentOut:
    return ConsentOut.of(ctx.consents.revoke(consent_id, body.end_at, body.reason))


@router.post(
    "/consents/{consent_id}/suspend", summary="Suspend at once (no grace)", responses=CHANGE
)
def suspend_consent(consent_id: str, body: SuspendIn, ctx: AdminDep) -> ConsentOut:
    return ConsentOut.of(ctx.consents.suspend(consent_id, body.reason))


@router.post("/consents/{consent_id}/resume", summary="End a suspension", responses=CHANGE)
def resume_consent(consent_id: str, ctx: AdminDep, body: ResumeIn | None = None) -> ConsentOut:
    return ConsentOut.of(ctx.consents.resume(consent_id, body.reason if body else None))


@router.get("/consents/{consent_id}/receipt", summary="The consent receipt", responses=ONE)
def receipt(consent_id: str, ctx: AdminDep) -> ReceiptOut:
    return ReceiptOut.model_validate(ctx.consents.receipt(consent_id))


@router.get(
    "/consents/{consent_id}/reads-after-end",
    summary="Reads the partner made after the end date of a retrospective revocation",
    responses=ONE,
)
def reads_after_end(consent_id: str, ctx: AdminDep) -> ReadsAfterEndOut:
    return ReadsAfterEndOut.of(ctx.consents.reads_after_end(consent_id))


@router.get(
    "/decision", summary="May the partner read these areas, as it stood at `at`?", responses=READ
)
def decision(
    ctx: AdminDep,
    partner_id: Annotated[str, Query(max_length=40)],
    area: AreaQuery,
    at: AwareDatetimeQuery = None,
) -> DecisionOut:
    areas = _areas(area)
    when = at or ctx.now
    return DecisionOut.of(ctx.consents.decision(partner_id, areas, when), when)


@router.get(
    "/access-log",
    summary="Reads of my school's data, newest first; Accept: text/csv exports",
    response_model=AccessLogOut,
    responses={**READ, 200: {"content": {"text/csv": {}}}},
)
def access_log(
    ctx: AdminDep,
    runtime: RuntimeDep,
    since: AwareDatetimeQuery = None,
    until: AwareDatetimeQuery = None,
    partner_id: Annotated[str | None, Query(max_length=40)] = None,
    area: Annotated[
        str | None, Query(max_length=100, description="Only reads naming this area")
    ] = None,
    outcome: Annotated[
        Literal["allowed", "denied", "refused"] | None,
        Query(description="Only reads allowed, or only those denied (`refused` is the same)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    accept: Annotated[str, Header()] = "application/json",
) -> Any:
    flt = LogFilter(
        since=since,
        until=until,
        partner_id=partner_id,
        area=None if area is None else _area(area),
        outcome="denied" if outcome == "refused" else outcome,
    )
    if "text/csv" in accept:
        engine = runtime.resources.engine
        name = f"access-log-{ctx.school.id}-{date.isoformat(ctx.now.date())}.csv"
        return StreamingResponse(
            iter_csv(lambda: session_scope(engine), ctx.school.id, flt),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    page = list_entries(ctx.session, ctx.school.id, flt, limit=limit, cursor=cursor)
    return AccessLogOut(
        data=[AccessLogEntryOut.of(row) for row in page.entries],
        meta=AccessLogMeta(next_cursor=page.next_cursor),
    )


def _area(value: str) -> str:
    name = value.strip()
    if name not in CATALOGUE:
        raise InvalidInputError(f"unknown data area(s): {name}", unknown_areas=[name])
    return name


def _areas(values: list[str]) -> list[str]:
    names = list(dict.fromkeys(n.strip() for v in values for n in v.split(",") if n.strip()))
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown or not names:
        raise InvalidInputError(
            f"unknown data area(s): {', '.join(unknown)}" if unknown else "name an area",
            unknown_areas=unknown,
        )
    return names
