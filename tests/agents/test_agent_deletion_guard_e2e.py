"""The mass-deletion guard end to end: a OneRoster agent against the real broker.

A good hand-written bundle goes up; then the school's export goes wrong (users.csv holds
only its header) and the broker must lose nothing.  Then a real mass deletion (six of
eight pupils leave) is held by the agent, shows in `misbroker agent status` and in
`GET /v1/admin/agent`, and goes through once an operator confirms it.  Every step waits on
state (the agent's calls return when done), never on time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp
import pytest

from agents.config import parse_config
from agents.mis.oneroster import OneRosterMis
from agents.runner import Agent
from agents.state import AgentState
from tests.agents.agent_broker import (
    ROOT,
    LiveBroker,
    add_school,
    broker_env,
    broker_records,
    live_broker,
)

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).parent / "bundles" / "leeds_1_1"
AREAS = (
    "school.details",
    "students.basic",
    "staff.basic",
    "contacts",
    "groups",
    "students.demographics",
)
PASSWORD = "Corr3ct!horse"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("broker")
    add_school(data_dir, redis_url, "Placeholder", "3830001")  # creates the database
    with live_broker(data_dir, redis_url) as running:
        yield running


def cli(broker: LiveBroker, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "--data-dir", str(broker.data_dir), *args],
        cwd=ROOT, env=broker_env(broker.data_dir, broker.redis_url), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = orjson.loads(done.stdout)
    return loaded


def admin_headers(broker: LiveBroker, school_id: str) -> dict[str, str]:
    enrolled = cli(broker, "school", "admin-add", school_id, "--email", "head@kva.sch.uk",
                   "--password", PASSWORD, "--json")  # fmt: skip
    code = pyotp.TOTP(enrolled["totp_secret"]).now()
    login = httpx.post(
        broker.url + "/v1/admin/login",
        json={"email": "head@kva.sch.uk", "password": PASSWORD, "totp": code},
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['token']}"}


def held_by_broker(broker: LiveBroker, school_id: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {area: broker_records(broker.settings(), school_id, area) for area in AREAS}


def run_all(agent: Agent) -> dict[str, Any]:
    results = {area: agent.extract(area) for area in AREAS}
    assert agent.flush().clean
    return results


def test_a_broken_export_deletes_nothing_and_a_confirmed_one_goes_through(
    tmp_path: Path, broker: LiveBroker
) -> None:
    school_id, key = add_school(broker.data_dir, broker.redis_url, "Kirkstall Valley", "3834012")
    export = Path(shutil.copytree(BUNDLE, tmp_path / "export"))
    document = {
        "broker_url": broker.url,
        "agent_key": key,
        "state_dir": str(tmp_path / "agent-state"),
        "mis": {"adapter": "oneroster", "directory": str(export)},
    }
    config = parse_config(document, tmp_path)
    agent = Agent(config, OneRosterMis(export), AgentState.open(config.state_dir))

    assert all(r.ok for r in run_all(agent).values())
    good = held_by_broker(broker, school_id)
    assert len(good["students.basic"]) == 8

    # The export goes wrong: users.csv holds only its header.  Nothing may be deleted.
    users = export / "users.csv"
    text = users.read_text(encoding="utf-8")
    users.write_text(text.splitlines()[0] + "\n", encoding="utf-8")
    results = run_all(agent)
    assert results["school.details"].ok
    assert not any(results[a].ok for a in AREAS[1:])
    assert held_by_broker(broker, school_id) == good

    # A real mass deletion: six of eight pupils leave.  The agent holds it back.
    kept = [line for line in text.splitlines() if not line.startswith(
        ("stu-03", "stu-04", "stu-05", "stu-06", "stu-07", "stu-08"))]  # fmt: skip
    users.write_text("\n".join(kept) + "\n", encoding="utf-8")
    held = agent.extract("students.basic")
    assert held.held is not None
    assert (held.held.records, held.held.deleting) == (8, 6)
    agent.heartbeat()
    assert held_by_broker(broker, school_id)["students.basic"] == good["students.basic"]

    status = cli(broker, "agent", "status", school_id, "--json")
    [shown] = status["schools"][0]["held_deletions"]
    assert (shown["area"], shown["records"], shown["deleting"]) == ("students.basic", 8, 6)
    admin = admin_headers(broker, school_id)
    health = httpx.get(broker.url + "/v1/admin/agent", headers=admin).json()
    assert [(h["area"], h["deleting"]) for h in health["held_deletions"]] == [("students.basic", 6)]

    # The operator confirms; the agent's next heartbeat carries the command, and it goes.
    confirmed = cli(broker, "agent", "confirm-deletion", school_id, "students.basic", "--json")
    assert confirmed["deleting"] == 6
    agent.heartbeat()
    assert set(broker_records(broker.settings(), school_id, "students.basic")) == {
        "stu-01",
        "stu-02",
    }
    agent.heartbeat()  # the agent no longer reports a hold; the broker's is released
    health = httpx.get(broker.url + "/v1/admin/agent", headers=admin).json()
    assert health["held_deletions"] == []
