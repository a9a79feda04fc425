"""The outbox against a fake broker: retries, idempotent replays, 409s, dead letters, order.

Only the broker's answers are faked here (httpx.MockTransport); the end-to-end and fault
tests in test_agent_e2e.py use the real broker.
"""

from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from agents.mis.synthetic import SyntheticMis
from agents.runner import Agent
from tests.agents.agent_fakes import Clock, FakeBroker, make_agent, make_config, records_of

DAY = date(2025, 11, 19)
AREAS = ("students.basic", "contacts", "attendance.marks")


@pytest.fixture
def mis() -> SyntheticMis:
    return SyntheticMis(seed=5, pupils=40, phase="primary", day=DAY)


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def agent(tmp_path: Path, mis: SyntheticMis, broker: FakeBroker, clock: Clock) -> Agent:
    return make_agent(make_config(tmp_path), mis, broker, clock)


def extract_all(agent: Agent, areas: tuple[str, ...] = AREAS) -> None:
    for area in areas:
        assert agent.extract(area).ok
        agent.flush()


def assert_equal(broker: FakeBroker, mis: SyntheticMis, areas: tuple[str, ...] = AREAS) -> None:
    for area in areas:
        assert broker.areas[area] == records_of(mis, area), area


def test_first_upload_is_full_and_the_broker_then_equals_the_mis(
    agent: Agent, broker: FakeBroker, mis: SyntheticMis
) -> None:
    extract_all(agent)
    assert [u["mode"] for u in broker.uploads] == ["full"] * len(AREAS)
    assert agent.state.pending() == []
    assert_equal(broker, mis)


def test_a_day_later_only_a_delta_goes_with_deletions(
    agent: Agent, broker: FakeBroker, mis: SyntheticMis, clock: Clock
) -> None:
    extract_all(agent)
    mis.advance(1)
    clock.advance(86400)
    extract_all(agent)
    deltas = broker.uploads[len(AREAS) :]
    assert [u["mode"] for u in deltas] == ["delta"] * len(AREAS)
    marks = next(u for u in deltas if u["area"] == "attendance.marks")
    assert marks["deleted"], "the oldest day of marks rolls out of the window"
    assert sum(len(u["records"]) for u in deltas) < sum(len(records_of(mis, a)) for a in AREAS)
    assert_equal(broker, mis)


def test_503_twice_then_200_is_retried_with_growing_jittered_waits(
    agent: Agent, broker: FakeBroker, clock: Clock
) -> None:
    broker.script = [503, 503]
    extract_all(agent, ("students.basic",))
    assert agent.state.pending() == []
    assert len(clock.slept) == 2
    assert all(0.5 <= s <= 300 for s in clock.slept)


def test_network_errors_are_retried(agent: Agent, broker: FakeBroker) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/agent/uploads")
    broker.script = [httpx.ConnectError("refused", request=request)] * 3
    extract_all(agent, ("students.basic",))
    assert agent.state.pending() == []
    assert "students.basic" in broker.areas


def test_a_lost_reply_is_replayed_and_applied_once(
    agent: Agent, broker: FakeBroker, mis: SyntheticMis
) -> None:
    broker.applied_then_lost = 1
    extract_all(agent, ("students.basic",))
    assert len(broker.uploads) == 2  # sent twice ...
    assert len(broker.batches) == 1  # ... applied once
    assert broker.uploads[0]["batch_id"] == broker.uploads[1]["batch_id"]
    assert agent.state.pending() == []
    assert_equal(broker, mis, ("students.basic",))


def test_stale_upload_is_dropped_and_the_next_upload_is_full(
    agent: Agent, broker: FakeBroker, mis: SyntheticMis
) -> None:
    extract_all(agent, ("students.basic",))
    broker.as_of["students.basic"] += timedelta(days=1)  # someone sent newer data
    mis.advance(1)
    extract_all(agent, ("students.basic",))
    assert agent.state.pending() == []
    assert agent.state.areas()["students.basic"].needs_full
    assert agent.extract("students.basic").mode == "full"


def test_reused_batch_id_and_invalid_batches_are_parked_not_lost(
    agent: Agent, broker: FakeBroker
) -> None:
    broker.script = [409, 422]
    extract_all(agent, ("students.basic", "contacts"))
    assert agent.state.pending() == []
    assert agent.state.dead_letter_count() == 2
    areas = agent.state.areas()
    assert areas["students.basic"].needs_full
    assert areas["contacts"].needs_full
    errors = " ".join(agent.errors.items(agent._clock()))
    assert "HTTP 409" in errors
    assert "HTTP 422" in errors


def test_unauthorised_keeps_the_batch_and_stops_the_flush(agent: Agent, broker: FakeBroker) -> None:
    assert agent.extract("students.basic").ok
    assert agent.extract("contacts").ok
    broker.script = [401]
    report = agent.flush()
    assert report.stopped is not None
    assert "401" in report.stopped
    assert [e.area for e in agent.state.pending()] == ["students.basic", "contacts"]
    assert agent.state.dead_letter_count() == 0


def test_a_waiting_batch_blocks_its_area_but_not_the_others(
    agent: Agent, broker: FakeBroker, mis: SyntheticMis, clock: Clock
) -> None:
    assert agent.extract("students.basic").ok
    mis.advance(1)
    clock.advance(60)
    assert agent.extract("students.basic").ok  # a second, newer batch of the same area
    assert agent.extract("contacts").ok
    broker.script = [500]
    report = agent.flush(clock() + timedelta(seconds=0.1))  # no time for a retry
    assert len(report.deferred) == 1
    pending = agent.state.pending()
    assert [e.area for e in pending] == ["students.basic", "students.basic"]
    assert pending[0].attempts == 1
    assert pending[0].next_attempt_at is not None
    assert "contacts" in broker.areas
    assert "students.basic" not in broker.areas
    # Before its next try nothing is sent; after it, both go, oldest first.
    assert agent.flush().deferred
    clock.now = pending[0].next_attempt_at
    assert agent.flush().clean
    assert [u["mode"] for u in broker.uploads if u["area"] == "students.basic"] == [
        "full",
        "delta",
    ]
    assert_equal(broker, mis, ("students.basic", "contacts"))


def test_the_upload_body_is_gzip_json_with_the_contract_envelope(
    agent: Agent, broker: FakeBroker
) -> None:
    extract_all(agent, ("attendance.codes",))
    (body,) = broker.uploads
    assert set(body) == {"batch_id", "area", "mode", "extracted_at", "records", "deleted"}
    assert body["extracted_at"].endswith("Z")


def test_rate_limiting_stops_the_flush_for_every_area(agent: Agent, broker: FakeBroker) -> None:
    assert agent.extract("students.basic").ok
    assert agent.extract("contacts").ok
    broker.script = [429]
    report = agent.flush(agent._clock() + timedelta(seconds=0.1))
    assert report.stopped is not None
    assert "429" in report.stopped
    assert len(agent.state.pending()) == 2
    assert broker.areas == {}


def test_a_stopping_agent_sends_nothing_more_and_loses_nothing(
    agent: Agent, broker: FakeBroker
) -> None:
    assert agent.extract("students.basic").ok
    agent.stopping.set()
    report = agent.flush()
    assert report.stopped == "stopping"
    assert broker.uploads == []
    assert len(agent.state.pending()) == 1
