"""Quarantine end to end: a OneRoster agent against the real broker.

A good hand-written bundle goes up whole.  Then the export has one bad pupil row (a
US-order birth date) and other pupils change: the broker must delete nothing, keep the
bad pupil's record as it was and take every other change, both for a full upload and
for a delta.  `misbroker-agent status` and the heartbeat's telemetry name the record,
its field and the kind of problem, never the value.  Every step waits on state.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents import cli
from agents.config import load_config
from agents.mis.oneroster import OneRosterMis
from agents.runner import Agent
from agents.state import AgentState
from tests.agents.agent_broker import LiveBroker, add_school, broker_records, live_broker

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).parent / "bundles" / "leeds_1_1"
AREAS = ("school.details", "students.basic", "students.contact_details", "groups", "contacts")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("broker")
    add_school(data_dir, redis_url, "Placeholder", "3830002")  # creates the database
    with live_broker(data_dir, redis_url) as running:
        yield running


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def held(broker: LiveBroker, school_id: str, area: str) -> dict[str, dict[str, Any]]:
    return broker_records(broker.settings(), school_id, area)


@pytest.mark.parametrize("full", [True, False])
def test_one_bad_pupil_row_deletes_nothing_and_the_others_are_updated(
    tmp_path: Path, broker: LiveBroker, capsys: pytest.CaptureFixture[str], full: bool
) -> None:
    dfe = "3834013" if full else "3834014"
    school_id, key = add_school(broker.data_dir, broker.redis_url, "Kirkstall Valley", dfe)
    export = Path(shutil.copytree(BUNDLE, tmp_path / "export"))
    replace_in(export / "orgs.csv", "3834012", dfe)
    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        f'broker_url = "{broker.url}"\nagent_key = "{key}"\nstate_dir = "state"\n'
        f'[mis]\nadapter = "oneroster"\ndirectory = "{export.as_posix()}"\n',
        encoding="utf-8",
    )
    config = load_config(config_path)
    agent = Agent(config, OneRosterMis(export), AgentState.open(config.state_dir))
    try:
        assert all(agent.extract(area, full=True).ok for area in AREAS)
        assert agent.flush().clean
        good = held(broker, school_id, "students.basic")
        assert len(good) == 8

        # One bad row (stu-03's birth date in US order), and two real changes.
        replace_in(
            export / "demographics.csv", "stu-03,active,,2013-05-02", "stu-03,active,,5/22/2013"
        )
        replace_in(export / "users.csv", "Aisha,Ahmed", "Aisha,Ahmed-Khan")
        replace_in(
            export / "users.csv",
            "stu-08,active,,true,org-1,student,hhussain,,Hamza",
            "stu-08,active,,true,org-1,student,hhussain,,Hamzah",
        )
        results = {area: agent.extract(area, full=full) for area in AREAS}
        assert all(r.ok for r in results.values())
        assert agent.flush().clean
        agent.heartbeat()

        now = held(broker, school_id, "students.basic")
        assert set(now) == set(good)  # nothing deleted
        assert now["stu-03"] == good["stu-03"]  # the bad record is kept as it was
        assert now["stu-01"]["surname"] == "Ahmed-Khan"
        assert now["stu-08"]["forename"] == "Hamzah"
        assert {k: v for k, v in now.items() if k not in ("stu-01", "stu-08")} == {
            k: v for k, v in good.items() if k not in ("stu-01", "stu-08")
        }
    finally:
        agent.close()

    assert cli.main(["--config", str(config_path), "status"]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert status["quarantined"]["counts"] == {"students.basic": 1}
    [shown] = status["quarantined"]["records"]
    assert (shown["area"], shown["id"], shown["field"]) == (
        "students.basic",
        "stu-03",
        "date_of_birth",
    )
    assert "5/22/2013" not in str(status)
