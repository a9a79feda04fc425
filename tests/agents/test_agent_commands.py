"""Commands from the heartbeat: each kind runs and is reported; a re-sent id is not re-run."""

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from agents import __version__
from agents.config import load_config, read_overrides
from agents.mis.synthetic import SyntheticMis
from agents.runner import RESTART, Agent
from tests.agents.agent_fakes import Clock, FakeBroker, make_agent, make_config

DAY = date(2025, 11, 19)


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def agent(tmp_path: Path, broker: FakeBroker) -> Agent:
    mis = SyntheticMis(seed=5, pupils=30, phase="primary", day=DAY)
    return make_agent(make_config(tmp_path), mis, broker, Clock())


def send(
    agent: Agent,
    broker: FakeBroker,
    kind: str,
    args: dict[str, Any] | None = None,
    command_id: str = "cmd_1",
) -> dict[str, Any]:
    broker.commands = [{"id": command_id, "kind": kind, "args": args or {}}]
    agent.heartbeat()
    reported_id, result = broker.results[-1]
    assert reported_id == command_id
    return result


def test_extract_runs_the_areas_and_reports_done(agent: Agent, broker: FakeBroker) -> None:
    result = send(agent, broker, "extract", {"areas": ["students.basic", "groups"], "full": True})
    assert result["status"] == "done"
    assert "students.basic: full batch" in result["detail"]
    assert "uploaded" in result["detail"]
    assert {u["area"] for u in broker.uploads} == {"students.basic", "groups"}


def test_extract_a_second_time_is_a_delta_unless_full_is_asked(
    agent: Agent, broker: FakeBroker
) -> None:
    send(agent, broker, "extract", {"areas": ["groups"]}, "cmd_1")
    send(agent, broker, "extract", {"areas": ["groups"]}, "cmd_2")
    send(agent, broker, "extract", {"areas": ["groups"], "full": True}, "cmd_3")
    assert [u["mode"] for u in broker.uploads] == ["full", "delta", "full"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "args.areas"),
        ({"areas": ["nope"]}, "unknown area(s): nope"),
        ({"areas": ["groups"], "full": "yes"}, "args.full"),
    ],
)
def test_bad_extracts_fail_with_a_reason(
    agent: Agent, broker: FakeBroker, args: dict[str, Any], message: str
) -> None:
    result = send(agent, broker, "extract", args)
    assert result["status"] == "failed"
    assert message in result["detail"]
    assert broker.uploads == []


def test_reconnect_rebuilds_the_http_client(agent: Agent, broker: FakeBroker) -> None:
    before = agent.client()._client
    assert send(agent, broker, "reconnect")["status"] == "done"
    assert agent.client()._client is not before
    assert before.is_closed


def test_restart_is_reported_then_the_loop_returns_restart(
    agent: Agent, broker: FakeBroker
) -> None:
    broker.commands = [{"id": "cmd_r", "kind": "restart", "args": {}}]
    assert agent.run_once() == RESTART
    assert broker.results == [
        ("cmd_r", {"status": "done", "detail": broker.results[0][1]["detail"]})
    ]


def test_check_update_reports_the_version(agent: Agent, broker: FakeBroker) -> None:
    result = send(agent, broker, "check_update")
    assert result == {
        "status": "done",
        "detail": f"misbroker-agent {__version__}; no update channel is configured",
    }


def test_configure_applies_and_persists_allowed_keys(
    tmp_path: Path, agent: Agent, broker: FakeBroker
) -> None:
    changes = {"heartbeat_seconds": 30, "schedules": {"behaviour": {"every_minutes": 10}}}
    result = send(agent, broker, "configure", changes)
    assert result["status"] == "done", result
    assert agent.config.heartbeat_seconds == 30
    assert agent.config.schedules.behaviour.every_minutes == 10
    assert agent.config.schedules.attendance.every_minutes == 30  # untouched
    assert read_overrides(agent.config.state_dir) == changes


def test_configure_survives_a_restart(tmp_path: Path, agent: Agent, broker: FakeBroker) -> None:
    send(agent, broker, "configure", {"heartbeat_seconds": 20})
    path = tmp_path / "agent.toml"
    state_dir = agent.config.state_dir
    path.write_text(
        f'broker_url = "http://127.0.0.1:9"\nagent_key = "k"\nstate_dir = "{state_dir}"\n'
        '[mis]\nadapter = "synthetic"\n'
    )
    assert load_config(path).heartbeat_seconds == 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"broker_url": "https://evil.example"}, "cannot configure broker_url"),
        ({}, "cannot configure nothing"),
        ({"heartbeat_seconds": 1}, "heartbeat_seconds: expected a whole number 5-3600"),
        ({"schedules": {"nightly": {"start": "25:00"}}}, "schedules.nightly.start"),
    ],
)
def test_configure_refuses_unknown_keys_and_bad_values(
    agent: Agent, broker: FakeBroker, args: dict[str, Any], message: str
) -> None:
    result = send(agent, broker, "configure", args)
    assert result["status"] == "failed"
    assert message in result["detail"]
    assert agent.config.heartbeat_seconds == 60
    assert read_overrides(agent.config.state_dir) == {}


def test_unknown_kinds_fail(agent: Agent, broker: FakeBroker) -> None:
    result = send(agent, broker, "self_destruct")
    assert result["status"] == "failed"
    assert "unknown command kind" in result["detail"]


def test_a_re_sent_command_is_reported_again_not_run_again(
    agent: Agent, broker: FakeBroker
) -> None:
    first = send(agent, broker, "extract", {"areas": ["groups"]}, "cmd_same")
    uploads = len(broker.uploads)
    again = send(agent, broker, "extract", {"areas": ["groups"]}, "cmd_same")
    assert again == first
    assert len(broker.uploads) == uploads


def test_an_undelivered_result_is_reported_with_the_next_heartbeat(
    agent: Agent, broker: FakeBroker
) -> None:
    broker.result_status = 503
    send(agent, broker, "check_update", command_id="cmd_x")
    assert [c.id for c in agent.state.unreported_commands()] == ["cmd_x"]
    broker.result_status = 200
    agent.heartbeat()
    assert [r[0] for r in broker.results] == ["cmd_x", "cmd_x"]
    assert agent.state.unreported_commands() == []
