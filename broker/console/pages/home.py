"""The home page: what needs attention first, then every partner and its status."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from broker.agenthub.health import school_health
from broker.console.deps import ConsoleDep
from broker.console.overview import attention, partner_status, soonest_end
from broker.console.web import ConsoleRoute, render

router = APIRouter(prefix="/school", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
def home(request: Request, ctx: ConsoleDep) -> Response:
    admin = ctx.admin_ctx
    partners = admin.consents.overview()
    health = school_health(admin, request.app.state.cache, request.app.state.resources)
    return render(
        request,
        "home.html",
        {
            "title": admin.school.name,
            "attention": attention(partners, health, admin.now),
            "partners": partners,
            "status_of": partner_status,
            "soonest_end": soonest_end,
            "now": admin.now,
            "flash": request.query_params.get("done"),
        },
    )
