"""`misbroker-agent`: exit codes, JSON output, restart by re-execution."""

import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents import cli
from tests.agents.agent_fakes import KEY


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
broker_url = "http://127.0.0.1:1"
agent_key = "{KEY}"
state_dir = "state"
[mis]
adapter = "synthetic"
seed = 2
pupils = 25
phase = "primary"
day = "2025-11-19"
[upload]
retry_budget_seconds = 0.5
timeout_seconds = 2
{extra}
""",
        encoding="utf-8",
    )
    return path


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "once", "extract", "status", "check"):
        assert command in out
    assert cli.main(["--version"]) == 0


def test_a_bad_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path).read_text().replace("127.0.0.1:1", "broker.example.org")
    (tmp_path / "bad.toml").write_text(path)
    assert cli.main(["--config", str(tmp_path / "bad.toml"), "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "plain http is allowed only to this machine" in err


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cli.main(["--config", str(write_config(tmp_path)), "dance"]) == 2
    assert cli.main(["--config", str(write_config(tmp_path)), "extract", "nope"]) == 2


def test_once_without_a_broker_keeps_the_outbox_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    assert cli.main(["--config", str(path), "once"]) == 1
    capsys.readouterr()
    assert cli.main(["--config", str(path), "status"]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert len(status["outbox"]) >= 10
    assert {e["mode"] for e in status["outbox"]} == {"full"}
    assert status["outbox"][0]["last_error"].startswith("network:")
    assert status["batch_limit_bytes"] == {"configured": 8 * 1024 * 1024, "broker": None}
    assert KEY not in capsys.readouterr().err


def test_check_reports_an_unreachable_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--config", str(write_config(tmp_path)), "check"]) == 1
    out = orjson.loads(capsys.readouterr().out)
    assert out["config"] == "ok"
    assert out["mis"] == "synthetic"
    assert "network" in out["broker_error"]


def test_run_re_executes_itself_when_the_broker_asks_for_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str]]] = []

    class Exec(Exception):
        pass

    def fake_execv(path: str, argv: list[str]) -> Any:
        calls.append((path, argv))
        raise Exec

    monkeypatch.setattr(cli, "main", lambda argv=None: cli.EXIT_RESTART)
    monkeypatch.setattr(os, "execv", fake_execv)
    monkeypatch.setattr(sys, "orig_argv", ["python", "/venv/bin/misbroker-agent", "run"])
    with pytest.raises(Exec):
        cli.run()
    assert calls == [(sys.executable, [sys.executable, "/venv/bin/misbroker-agent", "run"])]


def oneroster_config(tmp_path: Path, directory: Path, extra: str = "") -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
broker_url = "http://127.0.0.1:1"
agent_key = "{KEY}"
state_dir = "state"
[mis]
adapter = "oneroster"
directory = "{directory.as_posix()}"
{extra}
[upload]
retry_budget_seconds = 0.5
timeout_seconds = 2
""",
        encoding="utf-8",
    )
    return path


BUNDLES = Path(__file__).parent / "bundles"


def test_check_parses_the_whole_bundle_and_names_the_schools_when_it_cannot_choose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = oneroster_config(tmp_path, BUNDLES / "bradford_two_schools_1_1")
    assert cli.main(["--config", str(path), "check"]) == 1
    out = orjson.loads(capsys.readouterr().out)
    assert "Heaton Park Primary" in " ".join(out["problems"])
    assert "Manningham Lane Primary" in " ".join(out["problems"])
    users = next(f for f in out["source"]["files"] if f["name"] == "Users.csv")
    assert users["columns"][:6] == [
        "sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role"
    ]  # fmt: skip
    assert out["source"]["version"] == "1.1.0"


def test_check_with_the_school_chosen_counts_every_area(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = oneroster_config(tmp_path, BUNDLES / "bradford_two_schools_1_1", 'school = "3804001"')
    assert cli.main(["--config", str(path), "check"]) == 1  # the broker is unreachable
    out = orjson.loads(capsys.readouterr().out)
    assert out["problems"] == []
    assert out["source"]["school"]["name"] == "Heaton Park Primary"
    assert out["areas"]["students.basic"]["records"] == 3
    assert out["areas"]["staff.basic"]["records"] == 1
    assert "network" in out["broker_error"]


def test_check_fails_a_folder_that_holds_no_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "export.zip").write_bytes(b"")  # an export that never finished
    assert cli.main(["--config", str(oneroster_config(tmp_path, folder)), "check"]) == 1
    out = orjson.loads(capsys.readouterr().out)
    assert out["areas"] == {}
    assert out["problems"]
