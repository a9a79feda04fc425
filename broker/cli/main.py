"""`misbroker`: run the broker and administer schools and partners.

Every failure the operator can fix prints one line on stderr and exits 2; nothing is
half-created, because each command is one transaction checked before it starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.main import get_command

from broker.cli import agent as agent_cli
from broker.cli import audit
from broker.cli import consent as consent_cli
from broker.cli import keys as keys_cli
from broker.cli import purge as purge_cli
from broker.cli import status as status_cli
from broker.cli.context import CliError, CliState, emit, fail
from broker.clock import rfc3339
from broker.db import current_revision, head_revision, upgrade
from broker.errors import DomainError
from broker.partners.repository import PartnerRepository
from broker.partners.requests import RequestVersions, read_request_file
from broker.partners.service import register_partner, rotate_client_secret
from broker.schools.repository import SchoolRepository
from broker.schools.service import add_admin, close_school, register_school
from broker.settings import SettingsError
from broker.webhooks.settings import WebhookSettings
from consent.areas import AREAS, UnknownAreaError, catalogue_as_dict, parse_area_list

app = typer.Typer(
    name="misbroker",
    help="Operate misbroker: run it, register schools and partners.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
school_app = typer.Typer(help="Schools (tenants).", no_args_is_help=True)
partner_app = typer.Typer(help="Partners (apps that read school data).", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(school_app, name="school")
app.add_typer(partner_app, name="partner")
app.add_typer(db_app, name="db")
app.add_typer(agent_cli.app, name="agent")
app.command("purge")(purge_cli.purge)
app.command("status")(status_cli.status)
app.add_typer(consent_cli.app, name="consent")
app.add_typer(audit.app, name="audit")
app.add_typer(keys_cli.app, name="keys")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="MISBROKER_DATA_DIR",
            help="Data directory of the embedded deployment (default ./.misbroker).",
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(data_dir=data_dir)
    ctx.call_on_close(ctx.obj.close)


@app.command()
def up(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.", min=1, max=65535)] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Create a demo school, partner and consent.")
    ] = False,
) -> None:
    """Run everything in the foreground: API, worker, beat and (unless set) Redis."""
    from broker.cli.up import run_up

    raise typer.Exit(run_up(state(ctx).settings, host=host, port=port, demo=demo))


@app.command()
def areas(as_json: JsonOpt = False) -> None:
    """The data-area catalogue."""
    lines = [
        f"{a.name:<30} {int(a.validity.total_seconds() // 3600):>4}h"
        f"  {'core' if a.core else '    '}  {'sensitive' if a.sensitive else ''}"
        for a in AREAS
    ]
    emit(as_json, catalogue_as_dict(), "\n".join(lines))


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Apply every pending migration."""
    from broker.db import make_engine

    # Not through `resources()`: in production that refuses an unmigrated database, which
    # is exactly what this command is for (a fresh deployment's first step).
    engine = make_engine(state(ctx).settings.database_url)
    try:
        upgrade(engine)
        revision = current_revision(engine)
    finally:
        engine.dispose()
    emit(as_json, {"revision": revision}, f"database at revision {revision}")


@db_app.command("current")
def db_current(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the schema revision and whether it is the newest."""
    from broker.db import make_engine

    engine = make_engine(state(ctx).settings.database_url)
    current, head = current_revision(engine), head_revision(engine)
    engine.dispose()
    emit(
        as_json,
        {"revision": current, "head": head, "up_to_date": current == head},
        f"revision {current} (head {head})",
    )


@school_app.command("add")
def school_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="School name.")],
    dfe_number: Annotated[str, typer.Option(help="LA code + establishment number.")],
    urn: Annotated[str | None, typer.Option(help="Unique Reference Number.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a school; prints its id and its agent's key (shown once only)."""
    with state(ctx).unit_of_work() as (res, session):
        created = register_school(
            SchoolRepository(session),
            name=name,
            dfe_number=dfe_number,
            urn=urn,
            now=res.clock.now(),
        )
    out = {"school_id": created.school.id, "agent_key": created.agent_key}
    emit(
        as_json,
        out,
        f"school {created.school.id} registered\nagent key (shown once): {created.agent_key}",
    )


@school_app.command("admin-add")
def school_admin_add(
    ctx: typer.Context,
    school_id: Annotated[str, typer.Argument(help="School id (sch_...).")],
    email: Annotated[str, typer.Option(help="The admin's email, used to log in.")],
    password: Annotated[
        str,
        typer.Option(
            help="At least 8 characters with upper, lower, digit and special.",
            envvar="MISBROKER_ADMIN_PASSWORD",
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Add a school admin; prints the TOTP secret to enrol in an authenticator app."""
    with state(ctx).unit_of_work() as (res, session):
        created = add_admin(
            SchoolRepository(session),
            res.sealer,
            school_id=school_id,
            email=email,
            password=password,
            now=res.clock.now(),
        )
    out = {
        "admin_id": created.admin.id,
        "totp_secret": created.totp_secret,
        "otpauth_uri": created.otpauth_uri,
    }
    emit(
        as_json,
        out,
        f"admin {created.admin.email} added\nTOTP secret: {created.totp_secret}\n"
        f"enrol with: {created.otpauth_uri}",
    )


@school_app.command("close")
def school_close(
    ctx: typer.Context,
    school_id: Annotated[str, typer.Argument(help="School id (sch_...).")],
    as_json: JsonOpt = False,
) -> None:
    """Close a school: access stops; its data keys are destroyed after the retention period."""
    cli = state(ctx)
    with cli.unit_of_work() as (res, session):
        school = close_school(SchoolRepository(session), school_id=school_id, now=res.clock.now())
    assert school.closed_at is not None
    retention = cli.settings.cache.closed_school_retention_days
    from datetime import timedelta

    shred_at = school.closed_at + timedelta(days=retention)
    emit(
        as_json,
        {
            "school_id": school.id,
            "status": school.status.value,
            "closed_at": rfc3339(school.closed_at),
            "shred_after": rfc3339(shred_at),
        },
        f"school {school.id} closed; its data becomes unreadable after {rfc3339(shred_at)}",
    )


@school_app.command("list")
def school_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Registered schools."""
    with state(ctx).unit_of_work() as (_, session):
        schools = SchoolRepository(session).list()
    rows = [
        {
            "school_id": s.id,
            "name": s.name,
            "dfe_number": s.dfe_number,
            "urn": s.urn,
            "status": s.status.value,
            "created_at": rfc3339(s.created_at),
        }
        for s in schools
    ]
    human = "\n".join(
        f"{r['school_id']}  {r['dfe_number']}  {r['status']:<6}  {r['name']}" for r in rows
    )
    emit(as_json, {"schools": rows}, human or "no schools")


def _parse_reasons(values: list[str]) -> dict[str, str]:
    reasons: dict[str, str] = {}
    for value in values:
        area, sep, reason = value.partition("=")
        if not sep or not area.strip():
            fail(f'--reason must look like AREA="why", got {value!r}')
        reasons[area.strip()] = reason.strip().strip('"')
    return reasons


@partner_app.command("add")
def partner_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Partner (app) name.")],
    areas: Annotated[
        str | None,
        typer.Option(help="Requested areas, comma separated (every field required)."),
    ] = None,
    request: Annotated[
        Path | None,
        typer.Option(help="The request field by field: a JSON or TOML file."),
    ] = None,
    reason: Annotated[
        list[str] | None,
        typer.Option(help='Why an area is needed: AREA="why" (repeatable).'),
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="HTTPS URL for webhooks.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a partner; prints its OAuth client credentials and webhook secret (once)."""
    if (areas is None) == (request is None):
        fail("give --areas or --request (exactly one)")
    try:
        requested = parse_area_list(areas) if areas is not None else ()
        document = None if request is None else read_request_file(request)
    except UnknownAreaError as exc:
        fail(str(exc))
    with state(ctx).unit_of_work() as (res, session):
        created = register_partner(
            PartnerRepository(session),
            res.sealer,
            name=name,
            areas=requested,
            reasons=_parse_reasons(reason or []),
            webhook_url=webhook_url,
            now=res.clock.now(),
            url_policy=WebhookSettings().url_policy(res.settings.broker.environment),
            request=document,
        )
    out = {
        "partner_id": created.partner.id,
        "client_id": created.partner.client_id,
        "client_secret": created.client_secret,
        "webhook_secret": created.webhook_secret,
    }
    emit(
        as_json,
        out,
        "\n".join(f"{k}: {v}" for k, v in out.items()) + "\n(secrets are shown once only)",
    )


@partner_app.command("update-request")
def partner_update_request(
    ctx: typer.Context,
    partner_id: Annotated[str, typer.Argument(help="Partner id (prt_...).")],
    request: Annotated[Path, typer.Option(help="The new request: a JSON or TOML file.")],
    as_json: JsonOpt = False,
) -> None:
    """A new version of the partner's request: what it adds is pending at every school
    until an admin approves it; the approvals given meanwhile keep serving."""
    document = read_request_file(request)
    with state(ctx).unit_of_work() as (res, session):
        if PartnerRepository(session).get(partner_id) is None:
            fail(f"no partner {partner_id!r}")
        created = RequestVersions(session).add(partner_id, document, res.clock.now())
    out = {"partner_id": partner_id, "request_version": created.version}
    emit(as_json, out, f"{partner_id}: request version {created.version}")


@partner_app.command("list")
def partner_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Registered partners and the areas they request."""
    with state(ctx).unit_of_work() as (_, session):
        repo = PartnerRepository(session)
        rows: list[dict[str, Any]] = [
            {
                "partner_id": p.id,
                "name": p.name,
                "client_id": p.client_id,
                "status": p.status.value,
                "webhook_url": p.webhook_url,
                "requested_areas": [
                    {"area": r.area, "reason": r.reason} for r in repo.requests(p.id)
                ],
            }
            for p in repo.list()
        ]
    human = "\n".join(
        f"{r['partner_id']}  {r['name']}  ({len(r['requested_areas'])} areas)" for r in rows
    )
    emit(as_json, {"partners": rows}, human or "no partners")


@partner_app.command("rotate-secret")
def partner_rotate_secret(
    ctx: typer.Context,
    partner_id: Annotated[str, typer.Argument(help="Partner id (prt_...).")],
    revoke_old: Annotated[
        bool,
        typer.Option("--revoke-old", help="End the old secret and live tokens now (a leak)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Issue a new OAuth client secret (shown once); the old one works 24 h more."""
    cli = state(ctx)
    with cli.unit_of_work() as (res, session):
        rotated = rotate_client_secret(
            PartnerRepository(session),
            partner_id=partner_id,
            revoke_old=revoke_old,
            now=res.clock.now(),
        )
    if revoke_old:
        cli.revoke_partner_tokens(partner_id)
    until = rotated.previous_valid_until
    out = {
        "partner_id": partner_id,
        "client_id": rotated.partner.client_id,
        "client_secret": rotated.client_secret,
        "previous_secret_valid_until": rfc3339(until) if until else None,
    }
    emit(
        as_json,
        out,
        f"new client secret (shown once): {rotated.client_secret}\n"
        + (
            f"the old secret works until {rfc3339(until)}" if until else "the old secret is revoked"
        ),
    )


def run(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, exit 2 for anything the operator can fix."""
    command = get_command(app)
    try:
        # Without standalone mode click returns a command's `typer.Exit` code, not raises it.
        code = command.main(args=argv, prog_name="misbroker", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        # Bare `misbroker school`: the help text is the answer, not an error line.
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(2)
    except (UsageError, ClickException) as exc:
        _die(" ".join(exc.format_message().split()), 2)
    except typer.Abort:
        _die("aborted", 130)
    except CliError as exc:
        _die(str(exc), exc.exit_code)
    except (DomainError, SettingsError) as exc:
        _die(str(exc), 2)


def _die(message: str, code: int) -> None:
    sys.stderr.write(f"misbroker: error: {message}\n")
    sys.exit(code)


if __name__ == "__main__":
    run()
