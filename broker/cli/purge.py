"""`misbroker purge`: remove data more than 30 days out of date, or show what would go."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from agents.progress import progress
from broker.cache_tasks import cache_deps
from broker.cli.context import CliState, emit, fail
from cache.purge import format_report
from cache.tasks import run_purge
from consent.areas import parse_instant


def purge(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go; delete nothing.")
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Judge expiry at this RFC 3339 time (default now)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Permanently delete cached areas past validity + 30 days, from every tier."""
    cli = ctx.find_root().obj
    assert isinstance(cli, CliState)
    when: datetime | None = None
    if as_of is not None:
        when = parse_instant(as_of)
        if when is None:
            fail(f"--as-of {as_of!r} is not an RFC 3339 time with an offset")
    if when is not None and not dry_run:
        fail("--as-of only goes with --dry-run: a real purge judges expiry by the clock")
    res = cli.resources()
    cli.require_redis()
    settings = cli.settings
    broker_running = not settings.embedded_redis or settings.embedded_redis_socket.exists()
    with progress(None, "purge", "area") as bar:
        report = run_purge(
            cache_deps(res),
            now=when or res.clock.now(),
            dry_run=dry_run,
            drop_hot=broker_running,
            on_batch=bar.update,
        )
    out = format_report(report)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {out['areas']} area(s), {out['records']} record(s) as of {out['as_of']}"]
    lines += [
        f"  {i['school_id']}  {i['area']:<28} {i['records']:>7} records"
        f"  (data as of {i['data_as_of']})"
        for i in out["items"]
    ]
    emit(as_json, out, "\n".join(lines))
