"""`misbroker audit verify SCHOOL_ID`: check a school's access log is whole and unaltered."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from broker.cli.context import CliState, emit
from broker.db import session_scope
from broker.schools.repository import SchoolRepository
from broker.schools.service import require_school
from consent.access_log import verify
from consent.audit_keys import AuditKeyring

app = typer.Typer(help="The tamper-evident access log.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@app.command("verify")
def verify_log(
    ctx: typer.Context,
    school_id: Annotated[str, typer.Argument(help="School id (sch_...).")],
    as_json: JsonOpt = False,
) -> None:
    """Exit 0 if the chain is intact; exit 1 naming every altered, missing or moved entry."""
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    resources = obj.resources()
    keyring = AuditKeyring(
        lambda: session_scope(resources.engine), resources.sealer, resources.clock.now
    )
    with session_scope(resources.engine) as session:
        require_school(SchoolRepository(session), school_id)
    key = keyring.existing_key_for(school_id)
    with session_scope(resources.engine) as session:
        report = verify(session, school_id, key)
    breaks = [{"seq": b.seq, "kind": b.kind} for b in report.breaks]
    lines = [f"seq {b['seq']}: {b['kind']}" for b in breaks]
    human = (
        f"chain intact: {report.entries} entries"
        if report.intact
        else f"chain broken in {len(breaks)} place(s) ({report.entries} entries):\n"
        + "\n".join(lines)
    )
    out = {
        "school_id": school_id,
        "entries": report.entries,
        "head_seq": report.head_seq,
        "intact": report.intact,
        "breaks": breaks,
    }
    emit(as_json, out, human)
    if not report.intact:
        # Not typer.Exit: `run` drives click with standalone_mode=False, which swallows it.
        sys.exit(1)
