"""`misbroker agent ...`: agent health for operators, and key rotation."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer

from broker.agenthub import held
from broker.agenthub.heartbeat import agent_health
from broker.cli.context import CliState, emit
from broker.schools.repository import SchoolRepository
from broker.schools.service import issue_agent_key, require_school

app = typer.Typer(help="On-prem agents: health and keys.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


@app.command("status")
def status(
    ctx: typer.Context,
    school_id: Annotated[str | None, typer.Argument(help="One school (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Last heartbeat, telemetry and silence of every agent (one school: with commands)."""
    cli = _state(ctx)
    silent_after = timedelta(minutes=cli.settings.broker.agent_silent_after_minutes)
    with cli.unit_of_work() as (res, session):
        now = res.clock.now()
        repo = SchoolRepository(session)
        ids = [require_school(repo, school_id).id] if school_id else [s.id for s in repo.list()]
        reports: list[dict[str, Any]] = [
            agent_health(session, school_id=sid, now=now, silent_after=silent_after) for sid in ids
        ]
    if not school_id:
        for report in reports:
            report.pop("commands")
    lines = []
    for report in reports:
        for agent in report["agents"]:
            state = "revoked" if agent["revoked"] else "SILENT" if agent["silent"] else "ok"
            lines.append(
                f"{report['school_id']}  {agent['agent_id']}  {state:<7}  "
                f"last heartbeat {agent['last_heartbeat_at'] or 'never'}"
            )
        lines.extend(_held_line(report["school_id"], h) for h in report["held_deletions"])
    emit(as_json, {"schools": reports}, "\n".join(lines) or "no agents")


def _held_line(school_id: str, item: dict[str, Any]) -> str:
    state = "confirmed" if item.get("confirmed_at") else "HELD"
    return (
        f"{school_id}  {item['area']}  {state} deletion ({item.get('held_by')}):"
        f" {item.get('deleting')} of {item.get('records')} records;"
        f" confirm with: misbroker agent confirm-deletion {school_id} {item['area']}"
    )


@app.command("confirm-deletion")
def confirm_deletion(
    ctx: typer.Context,
    school_id: Annotated[str, typer.Argument(help="School id (sch_...).")],
    area: Annotated[str, typer.Argument(help="The data area whose deletion is held.")],
    as_json: JsonOpt = False,
) -> None:
    """Let a held mass deletion of one area go through, once (agent and broker)."""
    with _state(ctx).unit_of_work() as (res, session):
        require_school(SchoolRepository(session), school_id)
        done = held.confirm(
            session, school_id=school_id, area=area, actor="operator", now=res.clock.now()
        )
    emit(
        as_json,
        done,
        f"{area}: deletion of {done['deleting']} of {done['records']} records confirmed;"
        f" the agent will upload it (command {done['command_id']})",
    )


@app.command("rotate-key")
def rotate_key(
    ctx: typer.Context,
    school_id: Annotated[str, typer.Argument(help="School id (sch_...).")],
    as_json: JsonOpt = False,
) -> None:
    """Issue a new agent key for a school and revoke its current ones (shown once)."""
    with _state(ctx).unit_of_work() as (res, session):
        issued = issue_agent_key(
            SchoolRepository(session), school_id=school_id, now=res.clock.now(), revoke_others=True
        )
    emit(
        as_json,
        {"school_id": school_id, "agent_id": issued.agent.id, "agent_key": issued.agent_key},
        f"new agent key (shown once): {issued.agent_key}",
    )
