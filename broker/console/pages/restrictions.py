"""Restricted pupils: a pupil whose data goes to no partner at all (for example, for
safeguarding), restricted and lifted by the school's admins.  The list and its reasons are
sealed with the school's key (`broker.schools.restrictions`); the API is
`POST/DELETE /v1/admin/students/{id}/restriction`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from broker.cache_wiring import build_keyring
from broker.consent_wiring import RuntimeDep
from broker.console.deps import ConsoleContext, ConsoleDep
from broker.console.web import ConsoleRoute, redirect, render
from broker.schools import restrictions
from consent.areas import is_valid_record_id

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

DONE = {
    "restricted": "The pupil is restricted: no partner can read their data from now on.",
    "lifted": "The restriction is lifted: partners you share pupils with can read this "
    "pupil's data again.",
}


@router.get("/restrictions")
def restrictions_page(request: Request, ctx: ConsoleDep, runtime: RuntimeDep) -> Response:
    flash = DONE.get(request.query_params.get("done", ""))
    return _page(request, ctx, runtime, flash=flash)


@router.post("/restrictions")
async def restrict(request: Request, ctx: ConsoleDep, runtime: RuntimeDep) -> Response:
    form = await ctx.form(request)
    student_id = str(form.get("student_id") or "").strip()
    reason = str(form.get("reason") or "").strip()
    errors = []
    if not student_id:
        errors.append({"text": "Enter the pupil's id", "href": "#student_id"})
    elif not is_valid_record_id(student_id):
        errors.append(
            {
                "text": "Enter the pupil's id as your MIS gives it: up to 128 letters, "
                "numbers and . _ : / -",
                "href": "#student_id",
            }
        )
    if not reason:
        errors.append({"text": "Enter why this pupil's data must not be shared", "href": "#reason"})
    elif len(reason) > restrictions.MAX_REASON_LENGTH:
        errors.append(
            {
                "text": f"The reason must be {restrictions.MAX_REASON_LENGTH:,} characters "
                "or fewer",
                "href": "#reason",
            }
        )
    if errors:
        return _page(request, ctx, runtime, errors=errors, student_id=student_id, reason=reason)
    admin = ctx.admin_ctx
    restrictions.restrict(
        admin.session,
        build_keyring(runtime.resources),
        school_id=admin.school.id,
        student_id=student_id,
        reason=reason,
        actor=admin.admin.actor,
        now=admin.now,
    )
    admin.consents.restriction_changed()
    return redirect("/school/restrictions?done=restricted")


@router.post("/restrictions/lift")
async def lift(request: Request, ctx: ConsoleDep, runtime: RuntimeDep) -> Response:
    form = await ctx.form(request)
    admin = ctx.admin_ctx
    restrictions.lift(
        admin.session,
        build_keyring(runtime.resources),
        school_id=admin.school.id,
        student_id=str(form.get("student_id") or ""),
        now=admin.now,
    )  # a pupil not restricted is the console's 404 page
    admin.consents.restriction_changed()
    return redirect("/school/restrictions?done=lifted")


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    at = entry.get("at")
    return {**entry, "at": datetime.fromisoformat(at) if isinstance(at, str) else None}


def _page(request: Request, ctx: ConsoleContext, runtime: RuntimeDep, **extra: Any) -> Response:
    admin = ctx.admin_ctx
    _, restricted = restrictions.load(
        admin.session, build_keyring(runtime.resources), admin.school.id
    )
    values: dict[str, Any] = {
        "title": "Restricted pupils",
        "restricted": [(pupil, _shown(entry)) for pupil, entry in sorted(restricted.items())],
        "who": ctx.people({str(e.get("by")) for e in restricted.values() if e.get("by")}),
        "errors": [],
        "student_id": "",
        "reason": "",
        "flash": None,
    }
    values.update(extra)
    return render(
        request, "restrictions.html", values, status_code=422 if values["errors"] else 200
    )
