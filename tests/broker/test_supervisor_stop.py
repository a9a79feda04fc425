"""How `misbroker up` stops its children: in steps, each step's processes together, and a
child that ignores SIGTERM is killed at its timeout with a warning, never waited on forever.

The children here are small scripts that say when their SIGTERM handler is in place, so
nothing depends on how fast the machine starts them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.cli import up
from broker.cli.up import Supervisor
from broker.processes import spawn
from tests.conftest import make_settings
from tests.support.servers import wait_until

# On SIGTERM: run `on_term`, then exit 0.  `ready` is written once the handler is in place.
CHILD = """
import pathlib, signal, sys, time
here, name, on_term = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def term(signum, frame):
    exec(on_term)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
(here / f"{name}.ready").write_text("")
while True:
    time.sleep(0.05)
"""

WAIT_FOR_THE_WORKER = "while not (here / 'worker.termed').exists(): time.sleep(0.01)"
SAY_TERMED = "(here / f'{name}.termed').write_text('')"
IGNORE = "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"


def _child(tmp_path: Path, name: str, on_term: str) -> subprocess.Popen[bytes]:
    proc = spawn([sys.executable, "-c", CHILD, str(tmp_path), name, on_term])
    assert wait_until((tmp_path / f"{name}.ready").exists, 60), f"{name} not ready"
    return proc


def _supervisor(tmp_path: Path) -> Supervisor:
    return Supervisor(make_settings(tmp_path / "data"), "127.0.0.1", 0)


def test_beat_and_the_worker_are_stopped_together_after_the_api(tmp_path: Path) -> None:
    # Beat exits only once the worker has had its SIGTERM: stopped one after the other,
    # beat would sit out its whole timeout and be killed.
    sup = _supervisor(tmp_path)
    sup.children = {
        "api": _child(tmp_path, "api", SAY_TERMED),
        "beat": _child(tmp_path, "beat", WAIT_FOR_THE_WORKER),
        "worker": _child(tmp_path, "worker", "time.sleep(0.2)\n" + SAY_TERMED),
    }
    procs = dict(sup.children)
    sup.shutdown()
    assert {name: p.returncode for name, p in procs.items()} == {
        "api": 0,
        "beat": 0,
        "worker": 0,
    }
    assert sup.children == {}


def test_a_child_that_ignores_sigterm_is_killed_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(up.STOP_TIMEOUTS, "worker", 0.5)
    sup = _supervisor(tmp_path)
    sup.children = {
        "beat": _child(tmp_path, "beat", SAY_TERMED),
        "worker": _child(tmp_path, "worker", IGNORE),
    }
    procs = dict(sup.children)
    sup.shutdown()
    assert procs["beat"].returncode == 0
    assert procs["worker"].returncode == -9
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: the worker process did not stop within 0.5s of SIGTERM; killed"]
