"""`misbroker status` with nothing running: every field present, and what is down says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.broker.test_cli import Cli, add_school
from tests.support.servers import free_port


def test_status_of_a_stopped_deployment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISBROKER_PORT", str(free_port()))  # nothing answers there
    cli = Cli(tmp_path / "data", capsys)
    add_school(cli)
    out = cli.json("status")
    assert out["schools"] == {"active": 1}
    assert out["processes"]["api"]["ready"] is False
    assert out["processes"]["worker_and_beat"] == {"alive": False, "seconds_since_heartbeat": None}
    assert "up" not in out["processes"]  # no `misbroker up` holds the data directory
    assert out["queue_depth"] is None  # the embedded queue runs only under `up`
    assert out["agents"] == {"silent": 1, "total": 1}  # its agent never sent a heartbeat
    assert out["areas"] == {"stale": 0, "cached": 0}
    assert out["webhooks"] == {"retrying": 0, "failed_last_day": 0}
    assert out["access_log"]["entries"] == 0

    code, human, err = cli("status")
    assert code == 0, err
    lines = human.splitlines()
    assert [line.split()[0] for line in lines] == [
        "processes",
        "queue",
        "schools",
        "agents",
        "areas",
        "webhooks",
        "access",
    ]
    assert "api NOT READY" in lines[0]
    assert "NO HEARTBEAT" in lines[0]
    assert lines[1].endswith("unreachable")
    assert "1 of 1 silent" in lines[3]
