"""A partner's page: who it is, what it asks for and why; grant, change, revoke, suspend, resume.

Every change is shown before it is made (a confirmation page lists exactly what will be
shared, or when access will end) and then made by the admin API's own services.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from broker.admin.consents import PartnerOverview
from broker.admin.schemas import ConsentOut, PartnerOut, ReceiptOut
from broker.console.dates import DateAnswer, read_date, read_time
from broker.console.deps import ConsoleContext, ConsoleDep
from broker.console.web import ConsoleRoute, redirect, render
from broker.errors import DomainError, InvalidInputError, NotFoundError
from consent.areas import is_valid_record_id
from consent.engine import revocation_end
from consent.errors import ConsentError
from consent.events import Audience
from consent.service import ConsentView

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

MODES = {"read": "Read only", "read_write": "Read and write back"}
DONE = {
    "granted": "Access granted. The partner can read the data you chose from now on.",
    "changed": "The data areas were changed.",
    "revoked": "Access revoked.",
    "suspended": "Access suspended. The partner can read nothing until you resume it.",
    "resumed": "Access resumed.",
    "fields": "The fields shared were changed.",
    "audience": "The pupils shared were changed.",
}
# The year groups an audience can name, as MISs name them (DESIGN.md: "Year 8").
YEAR_GROUPS = ("Reception", *(f"Year {n}" for n in range(1, 14)))
LIVE = ("active", "ending", "suspended")


def _partner(ctx: ConsoleContext, partner_id: str) -> PartnerOverview:
    for item in ctx.admin_ctx.consents.overview():
        if item.partner.id == partner_id:
            return item
    raise NotFoundError("there is no such partner")


def _live(ctx: ConsoleContext, partner_id: str) -> tuple[PartnerOverview, ConsentView]:
    """The partner and its consent with this school, which must still be live to change."""
    item = _partner(ctx, partner_id)
    if item.consent is None or item.consent.status not in LIVE:
        raise NotFoundError(f"{item.partner.name} has no consent with your school to change")
    return item, item.consent


def _page(request: Request, ctx: ConsoleContext, item: PartnerOverview, **extra: Any) -> Response:
    consent = None
    if item.consent is not None:
        consent = ConsentOut.of(
            ctx.admin_ctx.consents.get(item.consent.consent.id), with_events=True
        )
    values: dict[str, Any] = {
        "title": item.partner.name,
        "item": item,
        "consent": consent,
        "who": _people(ctx, consent),
        "live": consent is not None and consent.status in LIVE,
        "requests": sorted(item.requests, key=lambda r: r.area),
        "modes": MODES,
        "chosen": [],
        "mode": "read",
        "flash": DONE.get(request.query_params.get("done", "")),
        "errors": [],
        "overview": PartnerOut.of(item),
        "year_groups": YEAR_GROUPS,
    }
    values.update(extra)
    return render(request, "partner.html", values, status_code=422 if values["errors"] else 200)


def _people(ctx: ConsoleContext, consent: ConsentOut | None) -> dict[str, str]:
    """Each actor of the history in words: an admin of this school by email."""
    return ctx.people({e.actor for e in (consent.events or [])} if consent else set())


@router.get("/partners/{partner_id}")
def partner_page(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    return _page(request, ctx, _partner(ctx, partner_id))


def _chosen_areas(form: FormData, item: PartnerOverview) -> list[str]:
    requested = {r.area for r in item.requests}
    chosen = [a for a in form.getlist("areas") if isinstance(a, str)]
    unknown = [a for a in chosen if a not in requested]
    if unknown:
        raise InvalidInputError(f"{item.partner.name} does not ask for {', '.join(unknown)}")
    return sorted(set(chosen))


def _mode(form: FormData) -> str:
    mode = form.get("mode") or "read"
    if mode not in MODES:
        raise InvalidInputError("choose read only, or read and write back")
    return str(mode)


def _confirm(
    request: Request, item: PartnerOverview, template: str, title: str, **extra: Any
) -> Response:
    return render(request, template, {"title": title, "item": item, **extra})


@router.post("/partners/{partner_id}/grant")
async def grant_check(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    """Step 1: the chosen areas, shown with every field before anything is shared."""
    form = await ctx.form(request)
    item = _partner(ctx, partner_id)
    areas, mode = _chosen_areas(form, item), _mode(form)
    if not areas:
        error = {"text": "Select at least one data area to share", "href": "#areas"}
        return _page(request, ctx, item, errors=[error], mode=mode)
    reasons = {r.area: r.reason for r in item.requests}
    return _confirm(
        request, item, "grant_confirm.html", "Check what you will share",
        areas=areas, mode=mode, modes=MODES, reasons=reasons,
    )  # fmt: skip


@router.post("/partners/{partner_id}/grant/confirm")
async def grant(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    form = await ctx.form(request)
    item = _partner(ctx, partner_id)
    areas, mode = _chosen_areas(form, item), _mode(form)
    ctx.admin_ctx.consents.grant(partner_id, areas, mode)
    return redirect(f"/school/partners/{partner_id}?done=granted")


@router.get("/partners/{partner_id}/areas")
def change_areas_page(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    item, live = _live(ctx, partner_id)
    return render(
        request,
        "change_areas.html",
        {
            "title": f"Change the data {item.partner.name} may read",
            "item": item,
            "chosen": sorted(live.snapshot.areas),
            "requests": sorted(item.requests, key=lambda r: r.area),
            "errors": [],
        },
    )


@router.post("/partners/{partner_id}/areas")
async def change_areas_check(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    form = await ctx.form(request)
    item, live = _live(ctx, partner_id)
    areas = _chosen_areas(form, item)
    current = set(live.snapshot.areas)
    if not areas:
        return render(
            request, "change_areas.html",
            {"title": f"Change the data {item.partner.name} may read", "item": item,
             "chosen": [], "requests": sorted(item.requests, key=lambda r: r.area),
             "errors": [{"text": "Select at least one data area, or revoke access instead",
                         "href": "#areas"}]},
            status_code=422,
        )  # fmt: skip
    grace = request.app.state.resources.settings.consent.revocation_grace
    return _confirm(
        request, item, "change_confirm.html", "Check your changes",
        areas=areas, added=sorted(set(areas) - current), removed=sorted(current - set(areas)),
        removed_until=revocation_end(ctx.admin_ctx.now, ctx.admin_ctx.now, grace),
    )  # fmt: skip


@router.post("/partners/{partner_id}/areas/confirm")
async def change_areas(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    form = await ctx.form(request)
    item, live = _live(ctx, partner_id)
    ctx.admin_ctx.consents.change_areas(live.consent.id, _chosen_areas(form, item))
    return redirect(f"/school/partners/{partner_id}?done=changed")


@router.get("/partners/{partner_id}/revoke")
def revoke_page(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    item, _ = _live(ctx, partner_id)
    return _revoke_form(request, item, None, [])


def _revoke_form(
    request: Request,
    item: PartnerOverview,
    answer: EndAnswer | None,
    errors: list[dict[str, str]],
) -> Response:
    answer = answer or EndAnswer(read_date({}, "end", "End date"), "")
    return render(
        request,
        "revoke.html",
        {"title": f"Revoke access for {item.partner.name}", "item": item, "answer": answer,
         "errors": errors},
        status_code=422 if errors else 200,
    )  # fmt: skip


def parse_end(form: FormData) -> tuple[datetime | None, EndAnswer, list[dict[str, str]]]:
    """The end instant from the date input and the time field (UTC), or the errors to show."""
    values = {str(k): str(v) for k, v in form.items() if isinstance(v, str)}
    answer = EndAnswer(read_date(values, "end", "End date"), values.get("time", "").strip()[:10])
    errors = []
    if answer.date.empty:
        errors.append({"text": "Enter the end date", "href": "#end-day"})
    elif answer.date.error:
        errors.append({"text": answer.date.error, "href": answer.date.href})
    at = read_time(answer.time) if answer.time else time(0, 0)
    if at is None:
        errors.append({"text": "Enter the time as hours and minutes, like 17:30", "href": "#time"})
    if errors or answer.date.value is None or at is None:
        return None, answer, errors
    return datetime.combine(answer.date.value, at, tzinfo=UTC), answer, []


@dataclass(frozen=True, slots=True)
class EndAnswer:
    date: DateAnswer
    time: str


@router.post("/partners/{partner_id}/revoke")
async def revoke_check(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    """Step 1: the end instant that will result, stated before it is confirmed."""
    form = await ctx.form(request)
    item, _ = _live(ctx, partner_id)
    end_at, answer, errors = parse_end(form)
    if end_at is None:
        return _revoke_form(request, item, answer, errors)
    now = ctx.admin_ctx.now
    grace = request.app.state.resources.settings.consent.revocation_grace
    ends_at = revocation_end(end_at, now, grace)
    return _confirm(
        request, item, "revoke_confirm.html", "Check when access will end",
        end_at=end_at, ends_at=ends_at, retrospective=end_at <= now, now=now,
        grace_hours=int(grace.total_seconds() // 3600),
        reason=str(form.get("reason") or "")[:1000],
    )  # fmt: skip


@router.post("/partners/{partner_id}/revoke/confirm")
async def revoke(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    form = await ctx.form(request)
    _, live = _live(ctx, partner_id)
    try:
        end_at = datetime.fromisoformat(str(form.get("end_at") or ""))
    except ValueError:
        raise InvalidInputError("the end date was lost: start the revocation again") from None
    if end_at.utcoffset() is None:
        raise InvalidInputError("the end date was lost: start the revocation again")
    reason = str(form.get("reason") or "").strip()[:1000] or None
    ctx.admin_ctx.consents.revoke(live.consent.id, end_at, reason)
    return redirect(f"/school/partners/{partner_id}?done=revoked")


@router.get("/partners/{partner_id}/suspend")
def suspend_page(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    item, _ = _live(ctx, partner_id)
    return render(
        request, "suspend.html",
        {"title": f"Suspend access for {item.partner.name}", "item": item, "errors": []},
    )  # fmt: skip


@router.post("/partners/{partner_id}/suspend")
async def suspend(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    form = await ctx.form(request)
    item, live = _live(ctx, partner_id)
    reason = str(form.get("reason") or "").strip()[:1000]
    if not reason:
        return render(
            request, "suspend.html",
            {"title": f"Suspend access for {item.partner.name}", "item": item,
             "errors": [{"text": "Enter why you are suspending access", "href": "#reason"}]},
            status_code=422,
        )  # fmt: skip
    ctx.admin_ctx.consents.suspend(live.consent.id, reason)
    return redirect(f"/school/partners/{partner_id}?done=suspended")


@router.post("/partners/{partner_id}/resume")
async def resume(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    await ctx.form(request)
    _, live = _live(ctx, partner_id)
    ctx.admin_ctx.consents.resume(live.consent.id, None)
    return redirect(f"/school/partners/{partner_id}?done=resumed")


@router.post("/partners/{partner_id}/fields")
async def change_field(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    """Share or stop sharing one field (optional, or new in the partner's request)."""
    form = await ctx.form(request)
    item, live = _live(ctx, partner_id)
    area, name, action = (str(form.get(k) or "") for k in ("area", "field", "action"))
    asked = None if item.request is None else item.request.areas.get(area)
    if asked is None or name not in asked.field_names or action not in ("share", "stop"):
        raise InvalidInputError(f"{item.partner.name} does not ask for that field")
    approved = set(live.snapshot.fields.get(area, asked.field_names))
    if action == "share":
        approved.add(name)
    else:
        approved.discard(name)
    ctx.admin_ctx.consents.change(live.consent.id, None, {area: sorted(approved)})
    return redirect(f"/school/partners/{partner_id}?done=fields")


@router.post("/partners/{partner_id}/audience")
async def change_audience(request: Request, partner_id: str, ctx: ConsoleDep) -> Response:
    """All pupils, or only those in the chosen year groups or named; pupils never shared."""
    form = await ctx.form(request)
    item, live = _live(ctx, partner_id)
    chosen = [y for y in form.getlist("year_groups") if isinstance(y, str)]
    if any(y not in YEAR_GROUPS for y in chosen):
        raise InvalidInputError("choose year groups from the list")
    named, named_error = _pupil_ids(form, "include_students")
    never, never_error = _pupil_ids(form, "exclude_students")
    errors = [e for e in (named_error, never_error) if e is not None]
    some = form.get("who") == "years"
    if some and not chosen and not named and not errors:
        errors.append(
            {"text": "Select at least one year group or name a pupil", "href": "#year_groups"}
        )
    if errors:
        return _page(request, ctx, item, errors=errors)
    if some:
        audience = Audience(
            frozenset(chosen) if chosen else None,
            frozenset(named) if named else None,
            frozenset(never),
        )
    else:
        audience = Audience(None, None, frozenset(never))
    ctx.admin_ctx.consents.set_audience(live.consent.id, audience)
    return redirect(f"/school/partners/{partner_id}?done=audience")


MAX_NAMED_PUPILS = 5000  # as the admin API's audience


def _pupil_ids(form: FormData, name: str) -> tuple[list[str], dict[str, str] | None]:
    """Pupil ids typed one a line (commas and spaces separate too), and the form error."""
    text = str(form.get(name) or "")
    ids = sorted(set(text.replace(",", " ").split()))
    bad = [i for i in ids if not is_valid_record_id(i)]
    if bad:
        shown = bad[0] if len(bad[0]) <= 40 else bad[0][:40] + "..."
        message = f"{shown} is not a pupil id: use the ids your MIS gives, one a line"
        return [], {"text": message, "href": f"#{name}"}
    if len(ids) > MAX_NAMED_PUPILS:
        return [], {"text": f"Name {MAX_NAMED_PUPILS:,} pupils or fewer", "href": f"#{name}"}
    return ids, None


@router.get("/consents/{consent_id}/receipt")
def receipt_page(request: Request, consent_id: str, ctx: ConsoleDep) -> Response:
    receipt = _receipt(ctx, consent_id)
    return render(
        request, "receipt.html",
        {"title": "Consent receipt", "receipt": receipt, "consent_id": consent_id,
         "pretty": orjson.dumps(receipt, option=orjson.OPT_INDENT_2).decode()},
    )  # fmt: skip


@router.get("/consents/{consent_id}/receipt.json")
def receipt_json(consent_id: str, ctx: ConsoleDep) -> Response:
    body = orjson.dumps(_receipt(ctx, consent_id), option=orjson.OPT_INDENT_2)
    response = Response(body, media_type="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="receipt-{consent_id}.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _receipt(ctx: ConsoleContext, consent_id: str) -> dict[str, Any]:
    """The receipt exactly as `GET /v1/admin/consents/{id}/receipt` gives it."""
    try:
        receipt = ctx.admin_ctx.consents.receipt(consent_id)
        return ReceiptOut.model_validate(receipt).model_dump(mode="json")
    except (ConsentError, DomainError):
        raise NotFoundError("there is no such consent in your school") from None
