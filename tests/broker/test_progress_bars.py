"""Long CLI work draws a progress bar on a terminal, and writes nothing extra anywhere else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import wait_until
from tests.support.terminal import Terminal

COMMANDS = [
    (["purge", "--dry-run"], "purge:", "would remove 0 area(s)"),
    (["keys", "rewrap"], "rewrap:", "rewrapped 0 data key(s)"),
]


def _argv(data_dir: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir), *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}


@pytest.mark.parametrize(("args", "bar", "summary"), COMMANDS, ids=["purge", "rewrap"])
def test_a_bar_on_a_terminal_and_none_in_a_pipe(
    tmp_path: Path, args: list[str], bar: str, summary: str
) -> None:
    piped = subprocess.run(
        _argv(tmp_path / "data", args),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip().startswith(summary)
    assert piped.stderr == ""  # no bar, no log line

    terminal = Terminal()
    proc = subprocess.Popen(
        _argv(tmp_path / "data", args),
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        env=_env(),
    )
    try:
        assert proc.wait(120) == 0, terminal.text
        assert wait_until(lambda: summary in terminal.text, 30), terminal.text
    finally:
        terminal.close()
    assert bar in terminal.text
    assert terminal.lines()[-1].startswith(summary)  # the bar cleared itself (leave=False)
