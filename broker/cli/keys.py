"""`misbroker keys ...`: the key-encryption key's work that an operator runs by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from agents.progress import progress
from broker.cache_tasks import cache_deps
from broker.cli.context import CliState, emit

app = typer.Typer(help="Data keys and the key-encryption key (KEK).", no_args_is_help=True)


@app.command("rewrap")
def rewrap(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Rewrap every school's data keys under the current KEK now (beat also does it daily).

    Run it after making a new KEK current, before retiring the old one.  Idempotent: keys
    already under the current KEK are left alone, and no data is re-encrypted.
    """
    cli = ctx.find_root().obj
    assert isinstance(cli, CliState)
    res = cli.resources()
    kek_id = res.key_provider.current_kek_id
    with progress(None, "rewrap", "key") as bar:
        count = cache_deps(res).keyring.rewrap_all(kek_id, on_rewrapped=bar.update)
    emit(
        as_json,
        {"kek_id": kek_id, "rewrapped": count},
        f"rewrapped {count} data key(s) under KEK {kek_id}",
    )
