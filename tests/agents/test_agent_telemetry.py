"""Telemetry: the shape the broker accepts, per-area extraction, errors without content."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

from agents import __version__
from agents.mis.base import AdapterError, Record
from agents.mis.synthetic import SyntheticMis
from agents.telemetry import RecentErrors, collect
from broker.agenthub.heartbeat import Telemetry
from tests.agents.agent_fakes import Clock, FakeBroker, make_agent, make_config

SECRET_NAME = "Zoë O'Brien-Secret"


class LeakyMis:
    """An MIS with one bad record (a name where the UPN goes) and one broken area."""

    name = "leaky"

    def __init__(self) -> None:
        self.inner = SyntheticMis(seed=1, pupils=20, phase="primary", day=date(2025, 11, 19))

    def areas(self) -> frozenset[str]:
        return frozenset({"students.basic", "groups"})

    def extract(self, area: str) -> Iterator[Record]:
        if area == "groups":
            raise AdapterError("groups export missing")
        records = list(self.inner.extract(area))
        records[3] = {**records[3], "upn": 12345, "gender": SECRET_NAME}
        return iter(records)


def test_heartbeat_body_fits_the_broker_model_and_carries_per_area_state(tmp_path: Path) -> None:
    broker, clock = FakeBroker(), Clock()
    agent = make_agent(make_config(tmp_path), LeakyMis(), broker, clock)
    agent.extract("students.basic")
    agent.extract("groups")
    agent.flush()
    agent.heartbeat()
    (body,) = broker.heartbeats
    parsed = Telemetry.model_validate(body)
    assert parsed.agent_version == __version__
    assert parsed.mis == "leaky"
    assert parsed.memory is not None
    assert parsed.memory["total_bytes"] > 0
    assert parsed.disk is not None
    assert parsed.disk["state_bytes"] > 0
    basic = parsed.last_extraction["students.basic"]
    assert basic.ok is True
    assert basic.records == 19
    assert basic.error is None
    groups = parsed.last_extraction["groups"]
    assert groups.ok is False
    assert groups.error == "groups export missing"
    assert body["outbox"]["batches"] == 0


def test_errors_name_record_and_field_but_never_the_value(tmp_path: Path) -> None:
    broker, clock = FakeBroker(), Clock()
    agent = make_agent(make_config(tmp_path), LeakyMis(), broker, clock)
    agent.extract("students.basic")
    agent.flush()
    agent.heartbeat()
    errors = broker.heartbeats[0]["errors"]
    assert any("1 invalid record(s) left out" in e and "'upn'" in e for e in errors)
    assert SECRET_NAME not in str(broker.heartbeats[0])
    assert "12345" not in str(errors)
    assert len(broker.uploads[0]["records"]) == 19  # the rest of the area still goes


def test_recent_errors_are_bounded_and_age_out() -> None:
    clock = Clock()
    errors = RecentErrors(limit=3)
    for n in range(5):
        errors.add(f"e{n} " + "x" * 1000, clock())
    items = errors.items(clock())
    assert len(items) == 3
    assert items[0].split()[1] == "e2"
    assert all(len(i) < 340 for i in items)
    clock.advance(25 * 3600)
    assert errors.items(clock()) == []


def test_collect_without_any_extraction(tmp_path: Path) -> None:
    agent = make_agent(make_config(tmp_path), LeakyMis(), FakeBroker(), Clock())
    body = collect(agent.state, mis="x", errors=RecentErrors(), now=Clock()())
    assert body["last_extraction"] == {}
    assert body["errors"] == []
    assert isinstance(body["cpu_percent"], float)
