"""The agent's mass-deletion guard: an upload deleting too much is kept back until confirmed.

A simple in-memory MIS whose records the test removes, the fake broker behind
MockTransport; the guard's counts are driven by state, never by time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.config import ConfigError
from agents.deletion_guard import DeletionLimit, holds
from agents.mis.base import AdapterError, Record
from agents.telemetry import collect
from tests.agents.agent_fakes import Clock, FakeBroker, make_agent, make_config

AREA = "students.basic"


class ListMis:
    """One area, its records set by the test."""

    name = "list"

    def __init__(self, count: int) -> None:
        self.records: list[Record] = [
            {"id": f"P{i:04d}", "forename": f"Pupil{i}"} for i in range(count)
        ]

    def areas(self) -> frozenset[str]:
        return frozenset({AREA})

    def extract(self, area: str) -> Iterator[Record]:
        if area != AREA:
            raise AdapterError(area)
        return iter(list(self.records))


def setup(tmp_path: Path, count: int = 100, **upload: Any) -> tuple[Any, ListMis, FakeBroker]:
    mis, broker, clock = ListMis(count), FakeBroker(), Clock()
    config = make_config(tmp_path, upload=upload) if upload else make_config(tmp_path)
    agent = make_agent(config, mis, broker, clock)
    first = agent.extract(AREA, full=True)
    assert first.ok
    assert agent.flush().clean
    clock.advance(60)
    return agent, mis, broker


def test_an_emptied_area_is_held_not_sent_and_shows_in_telemetry(tmp_path: Path) -> None:
    agent, mis, broker = setup(tmp_path)
    mis.records = []
    for full in (False, True):
        result = agent.extract(AREA, full=full)
        assert not result.ok
        assert result.held is not None
        assert (result.held.records, result.held.deleting) == (100, 100)
        assert agent.state.pending() == []
    assert len(broker.areas[AREA]) == 100
    telemetry = collect(agent.state, mis="list", errors=agent.errors, now=agent._clock())
    [held] = telemetry["held_deletions"]
    assert (held["area"], held["records"], held["deleting"]) == (AREA, 100, 100)
    assert any("mass deletion held" in e for e in telemetry["errors"])
    assert telemetry["last_extraction"][AREA]["ok"] is False


def test_ten_percent_or_five_records_go_through(tmp_path: Path) -> None:
    agent, mis, broker = setup(tmp_path)
    mis.records = mis.records[10:]  # 10 of 100: not more than 10%
    assert agent.extract(AREA).ok
    assert agent.flush().clean
    assert len(broker.areas[AREA]) == 90
    mis.records = mis.records[11:]  # 11 of 90: held
    assert agent.extract(AREA).held is not None
    assert len(broker.areas[AREA]) == 90


def test_a_confirmation_command_sends_it_once_and_clears_the_hold(tmp_path: Path) -> None:
    agent, mis, broker = setup(tmp_path)
    mis.records = mis.records[:30]
    assert agent.extract(AREA).held is not None
    broker.commands.append(
        {"id": "cmd-1", "kind": "extract", "args": {"areas": [AREA], "confirm_deletion": True}}
    )
    agent.heartbeat()
    assert broker.results[-1][1]["status"] == "done", broker.results
    assert len(broker.areas[AREA]) == 30
    assert agent.state.held_deletions() == []
    mis.records = []  # the next mass deletion is held again
    assert agent.extract(AREA).held is not None


def test_the_configured_threshold_is_used_and_sent_to_the_broker(tmp_path: Path) -> None:
    agent, mis, broker = setup(tmp_path, max_deletion_share=0.5, max_deletion_count=5)
    mis.records = mis.records[:60]
    assert agent.extract(AREA).ok
    assert agent.flush().clean
    assert broker.uploads[-1]["deletion_limit"] == {"max_share": 0.5, "max_count": 5}
    mis.records = mis.records[:20]
    assert agent.extract(AREA).held is not None


def test_threshold_values_are_checked(tmp_path: Path) -> None:
    for bad in ({"max_deletion_share": 1.5}, {"max_deletion_count": -1}):
        with pytest.raises(ConfigError, match=r"upload\.max_deletion"):
            make_config(tmp_path, upload=bad)
    assert orjson.dumps(make_config(tmp_path).upload.deletion_limit.as_json())


def test_windowed_event_areas_are_held_only_when_emptied() -> None:
    # A 5-day register window loses its oldest day (20%) every night, by design.
    assert not holds(DeletionLimit(), 400, 80, "attendance.marks")
    assert holds(DeletionLimit(), 400, 400, "attendance.marks")
    assert holds(DeletionLimit(), 400, 80, "students.basic")
