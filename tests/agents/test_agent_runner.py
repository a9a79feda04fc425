"""The loop: one cycle does heartbeat, due extractions and the outbox; stops and restarts."""

import threading
from datetime import date, timedelta
from pathlib import Path

from agents.mis.synthetic import SyntheticMis
from agents.runner import RESTART, STOPPED
from consent.areas import CORE_AREAS
from tests.agents.agent_fakes import Clock, FakeBroker, make_agent, make_config, records_of


class OneTick(threading.Event):
    """Stops the loop at its first wait."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return True


def test_first_cycle_uploads_every_scheduled_area_then_nothing_until_due(tmp_path: Path) -> None:
    mis = SyntheticMis(seed=8, pupils=30, phase="primary", day=date(2025, 11, 19))
    broker, clock = FakeBroker(), Clock()
    agent = make_agent(make_config(tmp_path), mis, broker, clock)
    assert agent.run_once() is None
    expected = CORE_AREAS | {"attendance.marks", "behaviour"}
    assert set(broker.areas) == expected
    for area in expected:
        assert broker.areas[area] == records_of(mis, area), area
    assert len(broker.heartbeats) == 1
    sent = len(broker.uploads)
    clock.advance(60)
    agent.run_once()
    assert len(broker.uploads) == sent  # nothing due a minute later
    assert len(broker.heartbeats) == 2  # but the heartbeat is
    clock.advance(30 * 60)
    agent.run_once()
    assert {u["area"] for u in broker.uploads[sent:]} == {
        "attendance.marks",
        "students.attendance_summary",
    }


def test_the_nightly_run_sends_deltas_of_core_areas(tmp_path: Path) -> None:
    mis = SyntheticMis(seed=8, pupils=30, phase="primary", day=date(2025, 11, 19))
    broker, clock = FakeBroker(), Clock()
    agent = make_agent(make_config(tmp_path), mis, broker, clock)
    agent.run_once()
    sent = len(broker.uploads)
    mis.advance(1)
    clock.now = clock.now.replace(hour=5, minute=55) + timedelta(days=1)  # Thursday, late night
    agent.run_once()
    nightly = broker.uploads[sent:]
    assert {u["area"] for u in nightly} == CORE_AREAS
    assert {u["mode"] for u in nightly} == {"delta"}
    for area in CORE_AREAS:
        assert broker.areas[area] == records_of(mis, area), area


def test_run_forever_stops_when_told_and_returns_restart_when_asked(tmp_path: Path) -> None:
    mis = SyntheticMis(seed=8, pupils=20, phase="primary", day=date(2025, 11, 19))
    broker, clock = FakeBroker(), Clock()
    agent = make_agent(make_config(tmp_path), mis, broker, clock)
    assert agent.run_forever(OneTick()) == STOPPED
    broker.commands = [{"id": "cmd_restart", "kind": "restart", "args": {}}]
    clock.advance(61)
    assert agent.run_forever(threading.Event()) == RESTART
    assert broker.results[-1][1]["status"] == "done"
