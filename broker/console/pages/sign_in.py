"""Sign in (email, password, code), first-time authenticator enrolment, recovery codes, sign out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import FormData

from broker.admin.recovery import issue_recovery_codes
from broker.consent_wiring import ConsentRuntime, RuntimeDep
from broker.console.deps import ConsoleDep, limits
from broker.console.models import SessionStage
from broker.console.sessions import (
    COOKIE,
    SIGN_IN_COOKIE,
    LiveSession,
    advance,
    end_session,
    resolve_session,
)
from broker.console.signin import audit, confirm_enrolment, enrolment, sign_in
from broker.console.web import (
    ConsoleRoute,
    CsrfRefused,
    csrf_ok,
    read_form,
    redirect,
    render,
    safe_next,
)
from broker.db import session_scope
from broker.errors import AuthenticationError, DomainError

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

CODE_LABEL = "Code from your authenticator app"


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/school",
    )


def sign_in_csrf(request: Request) -> str:
    current = request.cookies.get(SIGN_IN_COOKIE)
    return current if current and len(current) == 43 else secrets.token_urlsafe(32)


def _page(
    request: Request,
    *,
    values: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
    status_code: int = 200,
    flash: str | None = None,
) -> Response:
    csrf = sign_in_csrf(request)
    request.state.csrf_token = csrf
    response = render(
        request,
        "sign_in.html",
        {
            "title": "Sign in",
            "values": values or {},
            "errors": errors or [],
            "next": safe_next(request.query_params.get("next")),
            "code_label": CODE_LABEL,
            "flash": flash,
        },
        status_code=status_code,
    )
    set_cookie(request, response, SIGN_IN_COOKIE, csrf)
    return response


@router.get("/sign-in")
def sign_in_page(
    request: Request, signed_out: Annotated[bool, Query(alias="signed-out")] = False
) -> Response:
    return _page(request, flash="You have signed out." if signed_out else None)


@router.post("/sign-in")
async def sign_in_submit(request: Request, runtime: RuntimeDep) -> Response:
    form = await read_form(request)
    if not csrf_ok(form, request.cookies.get(SIGN_IN_COOKIE)):
        raise CsrfRefused
    values = {k: _text(form, k) for k in ("email", "password", "code")}
    errors = []
    if not values["email"].strip():
        errors.append({"text": "Enter your email address", "href": "#email"})
    if not values["password"]:
        errors.append({"text": "Enter your password", "href": "#password"})
    if errors:
        return _page(request, values={"email": values["email"]}, errors=errors, status_code=422)
    resources = runtime.resources
    if runtime.login_limiter is not None:  # the API login's per-IP and per-account limits
        client_ip = request.client.host if request.client is not None else "unknown"
        try:
            runtime.login_limiter.hit(client_ip, values["email"], resources.clock.now())
        except DomainError as exc:
            return _page(
                request,
                values={"email": values["email"]},
                errors=[{"text": _sentence(exc.detail), "href": "#email"}],
                status_code=exc.status,
            )
    with session_scope(resources.engine) as session:  # a failure is committed: it counts
        result = sign_in(
            session,
            resources.sealer,
            runtime.admin_settings,
            email=values["email"],
            password=values["password"],
            code=values["code"],
            now=resources.clock.now(),
        )
    if result.token is None:
        error = result.error or AuthenticationError("wrong email, password or code")
        text = (
            "Your email address, password or code is wrong"
            if isinstance(error, AuthenticationError)
            else _sentence(error.detail)
        )
        return _page(
            request,
            values={"email": values["email"]},
            errors=[{"text": text, "href": "#email"}],
            status_code=error.status,
        )
    target = {
        SessionStage.ENROL: "/school/sign-in/authenticator",
        SessionStage.RECOVERY_CODES: "/school/sign-in/recovery-codes",
    }.get(result.stage or SessionStage.SIGNED_IN, safe_next(_text(form, "next")))
    response = redirect(target)
    set_cookie(request, response, COOKIE, result.token)
    response.delete_cookie(SIGN_IN_COOKIE, path="/school")
    return response


def _pending(request: Request, runtime: ConsentRuntime, stage: SessionStage) -> LiveSession | None:
    """The browser's half-finished sign-in, if it is at `stage` (enrolment, recovery codes)."""
    resources = runtime.resources
    with session_scope(resources.engine) as session:
        token = request.cookies.get(COOKIE)
        live = resolve_session(session, token, resources.clock.now(), limits(runtime))
        if live is not None:
            session.expunge(live.row)
            session.expunge(live.admin)
    if live is None or live.row.stage is not stage:
        return None
    request.state.csrf_token = live.row.csrf_token
    return live


async def _pending_form(
    request: Request, runtime: ConsentRuntime, stage: SessionStage
) -> tuple[LiveSession, FormData] | None:
    """The half-finished sign-in and its posted form, refused without its CSRF token."""
    live = _pending(request, runtime, stage)
    if live is None:
        return None
    form = await read_form(request)
    if not csrf_ok(form, live.row.csrf_token):
        raise CsrfRefused
    return live, form


@router.get("/sign-in/authenticator")
def authenticator_page(request: Request, runtime: RuntimeDep) -> Response:
    live = _pending(request, runtime, SessionStage.ENROL)
    if live is None:
        return redirect("/school/sign-in")
    return _authenticator(request, runtime, live)


def _authenticator(
    request: Request,
    runtime: ConsentRuntime,
    live: LiveSession,
    errors: list[dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "authenticator.html",
        {
            "title": "Set up your authenticator app",
            "enrolment": enrolment(runtime.resources.sealer, live.admin),
            "email": live.admin.email,
            "errors": errors or [],
            "code_label": CODE_LABEL,
        },
        status_code=status_code,
    )


@router.post("/sign-in/authenticator")
async def authenticator_submit(request: Request, runtime: RuntimeDep) -> Response:
    pending = await _pending_form(request, runtime, SessionStage.ENROL)
    if pending is None:
        return redirect("/school/sign-in")
    live, form = pending
    code = _text(form, "code")
    if not code.strip():
        errors = [{"text": "Enter the 6-digit code from your authenticator app", "href": "#code"}]
        return _authenticator(request, runtime, live, errors, 422)
    resources = runtime.resources
    now = resources.clock.now()
    with session_scope(resources.engine) as session:
        admin = session.merge(live.admin)
        error = confirm_enrolment(
            session, resources.sealer, runtime.admin_settings, admin, code, now
        )
        if error is None:
            advance(session, session.merge(live.row), SessionStage.RECOVERY_CODES, now)
            audit(session, admin.id, admin.school_id, "console.totp_enrolled", now)
    if error is not None:
        text = (
            "The code is wrong or has been used: enter the code your app shows now"
            if isinstance(error, AuthenticationError)
            else error.detail
        )
        return _authenticator(request, runtime, live, [{"text": text, "href": "#code"}], 422)
    return redirect("/school/sign-in/recovery-codes")


@router.get("/sign-in/recovery-codes")
def recovery_codes_page(request: Request, runtime: RuntimeDep) -> Response:
    """Ten fresh codes on every view: a reload replaces those shown before, never shows them."""
    live = _pending(request, runtime, SessionStage.RECOVERY_CODES)
    if live is None:
        return redirect("/school/sign-in")
    resources = runtime.resources
    with session_scope(resources.engine) as session:
        codes = issue_recovery_codes(session, live.admin.id, resources.clock.now())
    return render(
        request, "recovery_codes.html", {"title": "Save your recovery codes", "codes": codes}
    )


@router.post("/sign-in/recovery-codes")
async def recovery_codes_done(request: Request, runtime: RuntimeDep) -> Response:
    pending = await _pending_form(request, runtime, SessionStage.RECOVERY_CODES)
    if pending is None:
        return redirect("/school/sign-in")
    live, _ = pending
    resources = runtime.resources
    now = resources.clock.now()
    with session_scope(resources.engine) as session:
        advance(session, session.merge(live.row), SessionStage.SIGNED_IN, now)
        audit(session, live.admin.id, live.admin.school_id, "console.signed_in", now)
    return redirect("/school")


@router.post("/sign-out")
async def sign_out(request: Request, ctx: ConsoleDep) -> Response:
    await ctx.form(request)
    session = ctx.admin_ctx.session
    end_session(session, ctx.token)
    admin = ctx.admin_ctx.admin
    audit(session, admin.admin_id, admin.school_id, "console.signed_out", ctx.admin_ctx.now)
    response = redirect("/school/sign-in?signed-out=1")
    response.delete_cookie(COOKIE, path="/school")
    return response


def _sentence(detail: str) -> str:
    return detail[:1].upper() + detail[1:]


def _text(form: FormData, name: str, limit: int = 1000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""
