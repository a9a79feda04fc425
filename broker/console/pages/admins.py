"""Admins of my school: list, invite (a one-time link), remove, change my password, enrol."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from broker.consent_wiring import RuntimeDep
from broker.console import admins
from broker.console.deps import ConsoleContext, ConsoleDep
from broker.console.models import SessionStage
from broker.console.pages.sign_in import set_cookie, sign_in_csrf
from broker.console.sessions import COOKIE, SIGN_IN_COOKIE, start_session
from broker.console.web import ConsoleRoute, CsrfRefused, csrf_ok, read_form, redirect, render
from broker.db import session_scope
from broker.errors import DomainError
from broker.schools.models import School

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

Errors = list[dict[str, str]]

DONE = {
    "removed": "The admin has been removed and signed out.",
    "password": "Your password has been changed. You have been signed out everywhere else.",
}
PASSWORD_FIELDS = {"current": "current-password", "new": "new-password", "confirm": "confirm"}


@router.get("/admins")
def admins_page(request: Request, ctx: ConsoleDep) -> Response:
    admin = ctx.admin_ctx
    return render(
        request,
        "admins.html",
        {
            "title": "Admins of your school",
            "admins": admins.active_admins(admin.session, admin.school.id),
            "invitations": admins.pending_invitations(admin.session, admin.school.id, admin.now),
            "me": admin.admin.admin_id,
            "flash": DONE.get(request.query_params.get("done", "")),
        },
    )


@router.get("/admins/add")
def add_page(request: Request, ctx: ConsoleDep) -> Response:
    return _add_form(request)


@router.post("/admins/add")
async def add_submit(request: Request, ctx: ConsoleDep) -> Response:
    form = await ctx.form(request)
    email = _text(form, "email", 254)
    admin = ctx.admin_ctx
    try:
        invited = admins.invite(admin.session, admin.admin, email, admin.now)
    except DomainError as exc:
        return _add_form(request, email, [{"text": _sentence(exc), "href": "#email"}], exc.status)
    link = f"{str(request.base_url).rstrip('/')}/school/enrol/{invited.token}"
    return render(
        request,
        "admin_invited.html",
        {"title": "Enrolment link created", "invitation": invited.invitation, "link": link},
    )


def _add_form(
    request: Request, email: str = "", errors: Errors | None = None, status_code: int = 200
) -> Response:
    return render(
        request,
        "admin_add.html",
        {"title": "Add an admin", "email": email, "errors": errors or []},
        status_code=status_code,
    )


@router.get("/admins/{admin_id}/remove")
def remove_page(request: Request, admin_id: str, ctx: ConsoleDep) -> Response:
    return _remove_form(request, ctx, admin_id)


@router.post("/admins/{admin_id}/remove")
async def remove_submit(request: Request, admin_id: str, ctx: ConsoleDep) -> Response:
    await ctx.form(request)
    admin = ctx.admin_ctx
    try:
        admins.remove_admin(admin.session, admin.admin, admin_id, admin.now)
    except admins.LastAdminError as exc:
        errors = [{"text": exc.detail, "href": "#remove"}]
        return _remove_form(request, ctx, admin_id, errors, exc.status)
    if admin_id == admin.admin.admin_id:  # they removed themselves: their session has ended
        response = redirect("/school/sign-in?signed-out=1")
        response.delete_cookie(COOKIE, path="/school")
        return response
    return redirect("/school/admins?done=removed")


def _remove_form(
    request: Request,
    ctx: ConsoleContext,
    admin_id: str,
    errors: Errors | None = None,
    status_code: int = 200,
) -> Response:
    admin = ctx.admin_ctx
    target = admins.admin_of_school(admin.session, admin.school.id, admin_id)
    return render(
        request,
        "admin_remove.html",
        {
            "title": f"Remove {target.email}",
            "target": target,
            "yourself": target.id == admin.admin.admin_id,
            "errors": errors or [],
        },
        status_code=status_code,
    )


@router.get("/account/password")
def password_page(request: Request, ctx: ConsoleDep) -> Response:
    return _password_form(request)


@router.post("/account/password")
async def password_submit(request: Request, ctx: ConsoleDep, runtime: RuntimeDep) -> Response:
    form = await ctx.form(request)
    admin = ctx.admin_ctx
    change = admins.change_password(
        admin.session,
        runtime.resources.sealer,
        runtime.admin_settings,
        admin.admin,
        current=_text(form, "current-password"),
        new=_text(form, "new-password"),
        confirm=_text(form, "confirm"),
        keep_session=ctx.token,
        now=admin.now,
    )
    if not change.done:  # returned, not raised: a wrong password is committed (lockout)
        errors = [
            {"text": text, "href": f"#{PASSWORD_FIELDS[field]}"}
            for field in PASSWORD_FIELDS
            for text in change.problems.get(field, [])
        ]
        return _password_form(request, errors, 422)
    return redirect("/school/admins?done=password")


def _password_form(request: Request, errors: Errors | None = None, status: int = 200) -> Response:
    return render(
        request,
        "password.html",
        {"title": "Change your password", "errors": errors or []},
        status_code=status,
    )


@router.get("/enrol/{token}")
def enrol_page(request: Request, token: str, runtime: RuntimeDep) -> Response:
    resources = runtime.resources
    with session_scope(resources.engine) as session:
        invitation = admins.open_invitation(session, token, resources.clock.now())
        school = session.get(School, invitation.school_id)
    return _enrol_form(request, token, invitation.email, school)


@router.post("/enrol/{token}")
async def enrol_submit(request: Request, token: str, runtime: RuntimeDep) -> Response:
    form = await read_form(request)
    if not csrf_ok(form, request.cookies.get(SIGN_IN_COOKIE)):
        raise CsrfRefused
    password, confirm = _text(form, "new-password"), _text(form, "confirm")
    resources = runtime.resources
    now = resources.clock.now()
    with session_scope(resources.engine) as session:
        invitation = admins.open_invitation(session, token, now)
        school = session.get(School, invitation.school_id)
        errors: Errors = []
        if not password:
            errors = [{"text": "Enter a password", "href": "#new-password"}]
        elif password != confirm:
            errors = [{"text": "The passwords do not match", "href": "#confirm"}]
        else:
            try:
                admin = admins.accept_invitation(session, resources.sealer, token, password, now)
            except admins.PasswordRejectedError as exc:
                errors = [
                    {"text": f"Your password needs {p}", "href": "#new-password"}
                    for p in exc.problems
                ]
        if errors:
            return _enrol_form(request, token, invitation.email, school, errors, 422)
        session_token = start_session(session, admin, SessionStage.ENROL, now)
    response = redirect("/school/sign-in/authenticator")
    set_cookie(request, response, COOKIE, session_token)
    response.delete_cookie(SIGN_IN_COOKIE, path="/school")
    return response


def _enrol_form(
    request: Request,
    token: str,
    email: str,
    school: School | None,
    errors: Errors | None = None,
    status_code: int = 200,
) -> Response:
    csrf = sign_in_csrf(request)
    request.state.csrf_token = csrf
    response = render(
        request,
        "enrol.html",
        {
            "title": "Create your password",
            "email": email,
            "invited_to": school,
            "action": f"/school/enrol/{token}",
            "errors": errors or [],
        },
        status_code=status_code,
    )
    set_cookie(request, response, SIGN_IN_COOKIE, csrf)
    return response


def _sentence(exc: DomainError) -> str:
    return exc.detail[:1].upper() + exc.detail[1:]


def _text(form: FormData, name: str, limit: int = 1000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""
