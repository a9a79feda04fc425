"""`misbroker up` as a person sees it on a terminal, and `misbroker status` beside it.

On a pseudo-terminal: short human lines (time, process, message), the demo's credentials
and its progress bar, and none of Celery's banner, its root warning or JSON.  Piped, the
same command logs JSON lines (tests/e2e/test_up.py reads those).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import redis

from broker.worker import HEARTBEAT_KEY
from tests.e2e.test_up import STOP_WAIT_SECONDS, _env, _ready, _up_argv
from tests.support.servers import free_port, wait_until
from tests.support.terminal import Terminal

pytestmark = pytest.mark.slow

HUMAN_LINE = re.compile(r"^\d\d:\d\d:\d\d (api|worker|beat)\s+\S")
CELERY_BANNER = ("-------------- ", "[config]", "[queues]", ".> app:", "celery@", "v5.")


@contextmanager
def up_on_a_terminal(
    tmp_path: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Terminal]]:
    data_dir, port = tmp_path / "data", free_port()
    terminal = Terminal()
    proc = subprocess.Popen(
        _up_argv(data_dir, port, *extra),
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        env=_env(TERM="xterm"),
    )
    try:
        assert wait_until(lambda: _ready(port) or proc.poll() is not None, 120), terminal.text
        assert proc.poll() is None, terminal.text[-3000:]
        yield proc, port, data_dir, terminal
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        terminal.close()


def _status(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir), "status", *extra],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )


def test_up_on_a_terminal_is_short_human_lines_and_status_summarises_it(tmp_path: Path) -> None:
    with up_on_a_terminal(tmp_path, "--demo") as (proc, _port, data_dir, terminal):
        # Beat has ticked and the worker has run what it sent: the periodic tasks have been
        # through at least once, so their lines (if any) are on the terminal by now.
        client = redis.Redis(unix_socket_path=str(data_dir / "run" / "redis.sock"))
        assert wait_until(lambda: client.get(HEARTBEAT_KEY) is not None, 120)
        client.close()
        assert wait_until(lambda: "sign in as" in terminal.text, 120), terminal.text[-3000:]

        human = _status(data_dir)
        assert human.returncode == 0, human.stderr
        rows = dict(line.split(None, 1) for line in human.stdout.splitlines() if line.strip())
        assert {"processes", "queue", "schools", "agents", "areas", "webhooks", "access"} <= set(
            rows
        ), human.stdout
        assert f"pid {proc.pid} running" in rows["processes"]
        assert "api ready" in rows["processes"]
        assert "worker and beat: heartbeat" in rows["processes"]
        assert "1 active" in rows["schools"]
        assert "task(s) waiting" in rows["queue"]
        assert not human.stdout.lstrip().startswith("{")

        as_json = _status(data_dir, "--json")
        assert as_json.returncode == 0, as_json.stderr
        summary = orjson.loads(as_json.stdout)
        assert summary["schools"] == {"active": 1}
        assert summary["processes"]["api"]["ready"] is True
        assert summary["processes"]["worker_and_beat"]["alive"] is True
        assert isinstance(summary["queue_depth"], int)
        assert summary["areas"]["cached"] > 0  # the demo's upload
        # The demo's curl read went nowhere yet; the access log may hold none.
        assert isinstance(summary["access_log"]["entries"], int)
        assert summary["webhooks"] == {"retrying": 0, "failed_last_day": 0}

        proc.send_signal(signal.SIGINT)
        assert proc.wait(STOP_WAIT_SECONDS) == 0, terminal.text[-4000:]

    lines = terminal.lines()
    text = terminal.text
    (tmp_path / "terminal.txt").write_text(text)
    assert any(line.startswith("misbroker is up at") for line in lines), lines
    assert "demo load:" in text  # the demo's progress bar was drawn on the terminal
    logs = [line for line in lines if HUMAN_LINE.match(line)]
    assert logs, lines
    assert {line.split()[1] for line in logs} >= {"api", "worker"}
    assert not [line for line in lines if line.startswith("{")], "JSON on a terminal"
    for mark in CELERY_BANNER:
        assert not [line for line in lines if mark in line], mark
    assert "superuser" not in text
    # Periodic work that found nothing is debug: no line per task received or succeeded.
    assert not [line for line in lines if re.search(r"Task \S+\[.*\] (received|succeeded)", line)]
    assert not [line for line in lines if "Sending due task" in line]
