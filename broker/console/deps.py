"""Who is at the browser: the console session behind the cookie, and one unit of work."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from broker.admin.auth import AdminIdentity
from broker.admin.deps import AdminContext, open_admin_context
from broker.consent_wiring import ConsentRuntime, RuntimeDep
from broker.console.models import SessionStage
from broker.console.sessions import COOKIE, SessionLimits, resolve_session
from broker.console.web import CsrfRefused, SignInRequired, csrf_ok, read_form
from broker.db import session_scope
from broker.schools.repository import SchoolRepository


@dataclass(frozen=True)
class ConsoleContext:
    """A signed-in admin's request: the admin API's context plus the browser's session."""

    admin_ctx: AdminContext
    token: str
    csrf_token: str

    def people(self, actors: Iterable[str]) -> dict[str, str]:
        """Each actor in words: an admin of this school by email, anyone else as recorded."""
        admins = {
            f"admin:{a.id}": a.email
            for a in SchoolRepository(self.admin_ctx.session).admins(self.admin_ctx.school.id)
        }
        return {actor: admins.get(actor, actor.replace(":", " ", 1)) for actor in actors}

    async def form(self, request: Request) -> FormData:
        """The posted form, refused (and nothing changed) unless it carries our CSRF token."""
        form = await read_form(request)
        if not csrf_ok(form, self.csrf_token):
            raise CsrfRefused
        return form


def limits(runtime: ConsentRuntime) -> SessionLimits:
    settings = runtime.admin_settings
    return SessionLimits(idle=settings.console_idle, absolute=settings.console_lifetime)


def console_context(request: Request, runtime: RuntimeDep) -> Iterator[ConsoleContext]:
    token = request.cookies.get(COOKIE)
    resources = runtime.resources
    with session_scope(resources.engine) as session:  # commits the touch or the expiry
        live = resolve_session(session, token, resources.clock.now(), limits(runtime))
        signed_in = live is not None and live.row.stage is SessionStage.SIGNED_IN
        if live is not None:
            identity = AdminIdentity(live.admin.id, live.admin.school_id, live.admin.email)
            csrf = live.row.csrf_token
    if not signed_in or token is None:
        raise SignInRequired
    request.state.csrf_token = csrf
    request.state.console_admin = identity
    with open_admin_context(runtime, identity) as ctx:
        request.state.console_school = ctx.school
        yield ConsoleContext(ctx, token, csrf)


ConsoleDep = Annotated[ConsoleContext, Depends(console_context, scope="function")]
