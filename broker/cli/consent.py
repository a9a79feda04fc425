"""`misbroker consent ...`: present only to refuse. Operators never grant or end consents.

A school is the data controller: only its admin decides who may read its data.  Each
attempt is recorded in `audit_events` before the refusal, so it is visible afterwards.
"""

from __future__ import annotations

import getpass

import typer

from broker.cli.context import CliState, fail
from broker.db import session_scope
from consent.models import AuditEvent
from consent.repository import ConsentRepository

app = typer.Typer(
    help="Consents are granted and ended by school admins only (admin API).",
    no_args_is_help=True,
)

# Whatever the operator typed, the answer is the same refusal: accept any arguments.
_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _refuse(ctx: typer.Context, verb: str) -> None:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    resources = obj.resources()
    event = AuditEvent(
        at=resources.clock.now(),
        actor=f"operator:{getpass.getuser()}",
        action=f"consent.{verb}",
        target=None,
        detail={"outcome": "refused", "via": "cli", "args": [a[:100] for a in ctx.args[:20]]},
    )
    with session_scope(resources.engine) as session:
        ConsentRepository(session).add_audit(event)
    fail(f"only a school admin can {verb} consent (use the admin API)")


@app.command("grant", context_settings=_ANY_ARGS)
def grant(ctx: typer.Context) -> None:
    """Refused: a school admin grants consent in the admin API."""
    _refuse(ctx, "grant")


@app.command("revoke", context_settings=_ANY_ARGS)
def revoke(ctx: typer.Context) -> None:
    """Refused: a school admin revokes consent in the admin API."""
    _refuse(ctx, "revoke")


@app.command("suspend", context_settings=_ANY_ARGS)
def suspend(ctx: typer.Context) -> None:
    """Refused: a school admin suspends consent in the admin API."""
    _refuse(ctx, "suspend")


@app.command("resume", context_settings=_ANY_ARGS)
def resume(ctx: typer.Context) -> None:
    """Refused: a school admin resumes consent in the admin API."""
    _refuse(ctx, "resume")
