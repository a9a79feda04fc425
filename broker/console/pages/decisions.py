"""Who could read what at a given moment: each partner and area, as it stood then.

Each cell is `SchoolConsents.decision(partner, [area], at)`, the very call behind
`GET /v1/admin/decision`, so the page and the API cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from broker.console.dates import DateAnswer, read_date, read_time
from broker.console.deps import ConsoleDep
from broker.console.web import ConsoleRoute, render
from consent.engine import AreaDecision

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)

REASONS: Mapping[str, str] = {
    "granted": "Granted",
    "in_grace": "In the grace period after a revocation",
    "not_granted": "This area was not granted",
    "no_consent": "No consent was given",
    "revoked": "Revoked",
    "suspended": "Suspended",
    "suspension_expired": "The suspension ran out",
    "ended": "Access to this area had ended",
    "not_yet_granted": "Not granted yet at that time",
    "write_not_permitted": "Writing is not permitted",
}


NOTHING = frozenset({"no_consent", "not_yet_granted"})  # no consent existed at that moment


@dataclass(frozen=True, slots=True)
class Row:
    partner_id: str
    partner: str
    area: str
    decision: AreaDecision


def read_instant(
    query: Mapping[str, str], now: datetime
) -> tuple[DateAnswer, str, datetime | None, list[dict[str, str]]]:
    """The instant asked for (now when nothing was), the typed values, and any errors."""
    day = read_date(query, "date", "Date")
    typed_time = query.get("time", "").strip()[:10]
    if day.empty and not typed_time:
        now = now.astimezone(UTC)
        typed = {"day": str(now.day), "month": str(now.month), "year": str(now.year)}
        return DateAnswer("date", typed, now.date()), f"{now:%H:%M}", now, []
    errors = []
    if day.empty:
        errors.append({"text": "Enter a date", "href": "#date-day"})
    elif day.error:
        errors.append({"text": day.error, "href": day.href})
    at_time = read_time(typed_time)
    if not typed_time:
        errors.append({"text": "Enter a time", "href": "#time"})
    elif at_time is None:
        errors.append({"text": "Enter a real time, like 09:30 or 14:00", "href": "#time"})
    if errors or day.value is None or at_time is None:
        return day, typed_time, None, errors
    return day, typed_time, datetime.combine(day.value, at_time, tzinfo=UTC), []


def by_partner(rows: list[Row]) -> tuple[list[list[Row]], list[str]]:
    """Partners that had a consent at that moment (a table each), and the names of the rest.

    Every partner on the broker asks every school; most never had an answer from this one,
    and a table of their refusals would bury the few that matter.
    """
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.partner_id, []).append(row)
    consented = [g for g in groups.values() if any(r.decision.reason not in NOTHING for r in g)]
    others = sorted(g[0].partner for g in groups.values() if g not in consented)
    return consented, others


@router.get("/decisions")
def decisions(request: Request, ctx: ConsoleDep) -> Response:
    admin = ctx.admin_ctx
    day, typed_time, at, errors = read_instant(request.query_params, admin.now)
    rows: list[Row] = []
    if at is not None:
        for item in admin.consents.overview():
            for wanted in item.requests:
                decision = admin.consents.decision(item.partner.id, [wanted.area], at)
                cell = decision.per_area.get(wanted.area) or AreaDecision(
                    wanted.area, decision.allowed, decision.reason, decision.consent_id
                )
                rows.append(Row(item.partner.id, item.partner.name, wanted.area, cell))
    return render(
        request,
        "decisions.html",
        {
            "title": "Who could read what",
            "day": day,
            "typed_time": typed_time,
            "at": at,
            "rows": rows,
            "groups": by_partner(rows),
            "reasons": REASONS,
            "errors": errors,
        },
        status_code=422 if errors else 200,
    )
