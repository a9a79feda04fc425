"""The access log: filtered pages of reads, its CSV, its hash chain, reads after an end date.

The filter is a GET form, so a filtered view works without JavaScript and its URL can be
shared; the CSV link carries the same query and streams exactly what the admin API's
`GET /v1/admin/access-log` (Accept: text/csv) streams for that filter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from starlette.responses import StreamingResponse

from broker.consent_wiring import RuntimeDep
from broker.console.dates import DateAnswer, read_date
from broker.console.deps import ConsoleContext, ConsoleDep
from broker.console.web import ConsoleRoute, render, secure
from broker.db import session_scope
from consent.access_log import DecisionText, LogFilter, iter_csv, list_entries, verify
from consent.areas import CATALOGUE

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

PAGE_SIZE = 50
OUTCOMES: Mapping[str, str] = {"": "Any", "allowed": "Allowed", "denied": "Refused"}
_OUTCOME: Mapping[str, DecisionText | None] = {"": None, "allowed": "allowed", "denied": "denied"}
FIELDS = ("partner", "area", "outcome")
BREAKS = {
    "altered": "its entry or stored hash was changed",
    "gap": "entries are missing from here",
    "reordered": "it is out of order",
    "duplicate": "it appears twice",
    "head_mismatch": "it does not match the newest entry recorded",
    "truncated": "the newest entries are missing",
}


@dataclass(frozen=True)
class Filters:
    """The filter form as typed, and the `LogFilter` it means (None while it has errors)."""

    typed: dict[str, str]
    dates: dict[str, DateAnswer]
    flt: LogFilter | None
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def messages(self) -> dict[str, str]:
        return {e["href"][1:]: e["text"] for e in self.errors}

    @property
    def query(self) -> str:
        """The filter as a query string (no cursor), for the CSV link and the next page."""
        return urlencode({k: v for k, v in self.typed.items() if v})


def read_filters(query: Mapping[str, str], partner_ids: Sequence[str]) -> Filters:
    typed = {name: query.get(name, "").strip()[:100] for name in FIELDS}
    dates = {
        "from": read_date(query, "from", "From date"),
        "to": read_date(query, "to", "To date"),
    }
    for answer in dates.values():
        typed.update({f"{answer.name}-{p}": v for p, v in answer.typed.items()})
    errors = []
    if typed["partner"] and typed["partner"] not in partner_ids:
        errors.append({"text": "Select a partner from the list", "href": "#partner"})
    if typed["area"] and typed["area"] not in CATALOGUE:
        errors.append({"text": "Select a data area from the list", "href": "#area"})
    if typed["outcome"] not in OUTCOMES:
        errors.append({"text": "Select allowed, refused or any outcome", "href": "#outcome"})
    errors += [{"text": a.error, "href": a.href} for a in dates.values() if a.error]
    since, until = dates["from"].value, dates["to"].value
    if since and until and until < since:
        errors.append(
            {"text": "To date must be the same as or after the from date", "href": "#to-day"}
        )
    if errors:
        return Filters(typed, dates, None, errors)
    flt = LogFilter(
        since=_midnight(since),
        until=_midnight(until + timedelta(days=1)) if until else None,  # the whole To day
        partner_id=typed["partner"] or None,
        area=typed["area"] or None,
        outcome=_OUTCOME[typed["outcome"]],
    )
    return Filters(typed, dates, flt)


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC)


def log_time(at: datetime) -> str:
    """`4 Dec 2026, 14:00:05`: a log's times need seconds (all times are UTC)."""
    at = at.astimezone(UTC)
    return f"{at.day} {at:%b %Y, %H:%M:%S}"


def _partners(ctx: ConsoleContext) -> dict[str, str]:
    return {p.partner.id: p.partner.name for p in ctx.admin_ctx.consents.overview()}


@router.get("/access-log")
def access_log(request: Request, ctx: ConsoleDep, runtime: RuntimeDep) -> Response:
    admin = ctx.admin_ctx
    partners = _partners(ctx)
    filters = read_filters(request.query_params, list(partners))
    page = None
    if filters.flt is not None:
        cursor = request.query_params.get("cursor") or None
        page = list_entries(
            admin.session, admin.school.id, filters.flt, limit=PAGE_SIZE, cursor=cursor
        )
    key = runtime.keyring.existing_key_for(admin.school.id)
    report = verify(admin.session, admin.school.id, key)
    names = dict(partners)
    for row in page.entries if page else ():
        if row.partner_id not in names:
            names[row.partner_id] = admin.consents.partner_name(row.partner_id) or row.partner_id
    return render(
        request,
        "access_log.html",
        {
            "title": "Access log",
            "filters": filters,
            "partners": partners,
            "names": names,
            "areas": sorted(CATALOGUE),
            "outcomes": OUTCOMES,
            "page": page,
            "later_page": "cursor" in request.query_params,
            "report": report,
            "breaks": BREAKS,
            "log_time": log_time,
            "errors": filters.errors,
        },
        status_code=422 if filters.errors else 200,
    )


@router.get("/access-log.csv")
def access_log_csv(request: Request, ctx: ConsoleDep, runtime: RuntimeDep) -> Response:
    """The API's CSV for the same filter, byte for byte (`iter_csv`, its file name too)."""
    admin = ctx.admin_ctx
    filters = read_filters(request.query_params, list(_partners(ctx)))
    if filters.flt is None:
        return access_log(request, ctx, runtime)
    engine = runtime.resources.engine
    name = f"access-log-{admin.school.id}-{date.isoformat(admin.now.date())}.csv"
    response = StreamingResponse(
        iter_csv(lambda: session_scope(engine), admin.school.id, filters.flt),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
    secure(response)
    return response


@router.get("/access-log/after-end")
def after_end(request: Request, ctx: ConsoleDep) -> Response:
    """Every consent revoked retrospectively, and the reads between its end and revocation."""
    consents = ctx.admin_ctx.consents
    reports = [
        report
        for report in (consents.reads_after_end(view.consent.id) for view in consents.all())
        if report.windows
    ]
    names = {
        r.view.consent.partner_id: consents.partner_name(r.view.consent.partner_id) for r in reports
    }
    return render(
        request,
        "access_log_after_end.html",
        {
            "title": "Reads after an end date",
            "reports": reports,
            "names": names,
            "log_time": log_time,
        },
    )
