"""Large areas against the fake broker: split uploads, split fulls, 413 re-splits, crashes.

The fake broker keeps the contract the agent relies on (idempotent batch ids, 409 for
older data, full replaces, 413 over its limit); test_agent_large_areas_e2e.py runs the
same situations through the real broker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from agents.runner import Agent
from agents.state import AgentState
from tests.agents.agent_fakes import Clock, Crash, FakeBroker, make_agent, make_config
from tests.agents.photo_mis import AREA, PhotoMis

LIMIT = 200_000


@pytest.fixture
def mis() -> PhotoMis:
    return PhotoMis(40, seed=7)  # ~1.9 MB of JSON: about ten batches of 200 KB


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def agent_with(
    tmp_path: Path, mis: PhotoMis, broker: FakeBroker, clock: Clock, **upload: Any
) -> Agent:
    config = make_config(tmp_path, upload=upload) if upload else make_config(tmp_path)
    return make_agent(config, mis, broker, clock)


@pytest.fixture
def agent(tmp_path: Path, mis: PhotoMis, broker: FakeBroker, clock: Clock) -> Agent:
    return agent_with(tmp_path, mis, broker, clock, max_batch_bytes=LIMIT)


def later(agent: Agent, clock: Clock, *, full: bool = False) -> list[str]:
    """A later extraction of the photos, flushed; the batch ids it spooled."""
    clock.advance(3600)
    result = agent.extract(AREA, full=full)
    assert result.ok
    assert agent.flush().clean
    return list(result.batch_ids)


def uploads_of(broker: FakeBroker, batch_ids: list[str]) -> list[dict[str, Any]]:
    wanted = set(batch_ids)
    return [u for u in broker.uploads if u["batch_id"] in wanted]


def test_a_first_upload_too_large_for_one_batch_arrives_whole_in_delta_batches(
    agent: Agent, broker: FakeBroker, mis: PhotoMis
) -> None:
    result = agent.extract(AREA)
    assert (result.mode, result.split) == ("full", True)
    assert len(result.batch_ids) >= 8
    assert "full as" in result.describe()
    assert agent.flush().clean
    assert [u["batch_id"] for u in broker.uploads] == list(result.batch_ids)  # in order
    assert {u["mode"] for u in broker.uploads} == {"delta"}  # a partial `full` would delete
    assert max(broker.sizes) <= LIMIT
    assert broker.areas[AREA] == mis.records()
    status = agent.state.areas()[AREA]
    assert status.last_full_at is not None
    assert not status.needs_full
    assert len(agent.state.hashes(AREA)) == len(mis.photos)


def test_a_small_area_still_gets_one_real_full_batch(
    tmp_path: Path, broker: FakeBroker, clock: Clock
) -> None:
    mis = PhotoMis(3)
    agent = agent_with(tmp_path, mis, broker, clock, max_batch_bytes=LIMIT)
    result = agent.extract(AREA)
    assert (result.mode, result.split, len(result.batch_ids)) == ("full", False, 1)
    assert agent.flush().clean
    assert [u["mode"] for u in broker.uploads] == ["full"]
    assert broker.areas[AREA] == mis.records()


def test_a_large_delta_is_split_with_its_deletions_last(
    agent: Agent, broker: FakeBroker, mis: PhotoMis, clock: Clock
) -> None:
    agent.extract(AREA)
    assert agent.flush().clean
    ids = sorted(mis.photos)
    mis.retake(ids[:20])
    mis.remove(ids[30:34])  # under the mass-deletion guard's 5 records
    batch_ids = later(agent, clock)
    sent = uploads_of(broker, batch_ids)
    assert len(sent) > 1
    assert {u["mode"] for u in sent} == {"delta"}
    assert sorted(r["id"] for u in sent for r in u["records"]) == ids[:20]
    assert sorted(d for u in sent for d in u["deleted"]) == ids[30:34]
    first_deletion = next(i for i, u in enumerate(sent) if u["deleted"])
    assert not any(u["records"] for u in sent[first_deletion + 1 :])
    assert max(broker.sizes) <= LIMIT
    assert broker.areas[AREA] == mis.records()


def test_a_split_full_deletes_the_ids_the_mis_lost_after_sending_every_record(
    agent: Agent, broker: FakeBroker, mis: PhotoMis, clock: Clock
) -> None:
    agent.extract(AREA)
    assert agent.flush().clean
    gone = sorted(mis.photos)[:5]
    mis.remove(gone)
    mis.admit(["N00001", "N00002"])
    batch_ids = later(agent, clock, full=True)
    sent = uploads_of(broker, batch_ids)
    assert {u["mode"] for u in sent} == {"delta"}
    assert sorted(r["id"] for u in sent for r in u["records"]) == sorted(mis.photos)
    assert sent[-1]["deleted"] == gone
    assert broker.areas[AREA] == mis.records()


def test_a_split_full_also_deletes_what_a_refused_batch_failed_to_delete(
    agent: Agent, broker: FakeBroker, mis: PhotoMis, clock: Clock
) -> None:
    agent.extract(AREA)
    assert agent.flush().clean
    gone = sorted(mis.photos)[:3]
    mis.remove(gone)
    clock.advance(60)
    agent.extract(AREA)
    broker.script = [422]  # the deleting delta is refused: the broker still holds them
    agent.flush()
    assert agent.state.dead_letter_count() == 1
    assert set(gone) <= set(broker.areas[AREA])
    clock.advance(3600)
    result = agent.extract(AREA)  # needs_full: a full, split as the area is large
    assert (result.mode, result.split) == ("full", True)
    assert agent.flush().clean
    assert broker.areas[AREA] == mis.records()


def test_a_record_too_large_for_any_batch_is_left_out_and_named_not_shown(
    agent: Agent, broker: FakeBroker, mis: PhotoMis, caplog: pytest.LogCaptureFixture
) -> None:
    mis.retake(["P00007"], size=300_000)
    content = mis.records()["P00007"]["photo"][:200]
    with caplog.at_level(logging.DEBUG):
        result = agent.extract(AREA)
        assert agent.flush().clean
    assert result.rejected == 1
    errors = agent.errors.items(agent._clock())
    (error,) = [e for e in errors if "too large" in e]
    assert "record 7 (P00007)" in error
    assert str(LIMIT) in error
    assert all(content not in e for e in errors)
    assert content not in caplog.text
    expected = mis.records()
    del expected["P00007"]
    assert broker.areas[AREA] == expected


def test_a_413_re_splits_to_the_broker_limit_which_later_batches_respect(
    tmp_path: Path, mis: PhotoMis, broker: FakeBroker, clock: Clock
) -> None:
    agent = agent_with(tmp_path, mis, broker, clock)  # 8 MiB: one real full batch
    broker.max_body_bytes = 300_000
    full = agent.extract(AREA)
    assert (full.mode, full.split, len(full.batch_ids)) == ("full", False, 1)
    report = agent.flush()
    assert report.clean
    assert report.resplit == [full.batch_id]
    assert agent.state.dead_letter_count() == 0
    assert agent.state.upload_limit() == 300_000
    assert broker.areas[AREA] == mis.records()
    assert broker.sizes[0] > 300_000
    assert max(broker.sizes[1:]) <= 300_000
    assert any("over the broker's limit" in e for e in agent.errors.items(clock()))
    # The next extraction builds batches that fit: no more refusals.
    refused = len(broker.sizes) - len(broker.uploads)
    ids = sorted(mis.photos)
    mis.retake(ids[:15])
    mis.remove(ids[-3:])
    later(agent, clock)
    assert len(broker.sizes) - len(broker.uploads) == refused
    assert broker.areas[AREA] == mis.records()


def test_a_413_without_a_stated_limit_halves_until_each_piece_fits(
    tmp_path: Path, mis: PhotoMis, broker: FakeBroker, clock: Clock
) -> None:
    agent = agent_with(tmp_path, mis, broker, clock)
    broker.max_body_bytes, broker.limit_member = 300_000, False
    agent.extract(AREA)
    report = agent.flush()
    assert report.clean
    assert len(report.resplit) >= 3  # 1.9 MB -> halves -> quarters -> eighths
    # Only a bound is known: under the smallest size refused, over what was accepted.
    learned = agent.state.upload_limit()
    assert learned is not None
    assert 300_000 <= learned < min(s for s in broker.sizes if s > 300_000)
    assert agent.state.dead_letter_count() == 0
    assert broker.areas[AREA] == mis.records()


def test_a_real_full_re_split_after_a_413_still_deletes_the_ids_it_retired(
    tmp_path: Path, mis: PhotoMis, broker: FakeBroker, clock: Clock
) -> None:
    agent = agent_with(tmp_path, mis, broker, clock)
    agent.extract(AREA)
    assert agent.flush().clean
    gone = sorted(mis.photos)[-4:]
    mis.remove(gone)
    broker.max_body_bytes = 300_000  # the broker's limit went down since
    clock.advance(3600)
    full = agent.extract(AREA, full=True)
    assert (full.mode, full.split) == ("full", False)
    assert agent.state.retired(full.batch_ids[0]) == gone
    report = agent.flush()
    assert report.clean
    assert report.resplit == [full.batch_id]
    assert broker.uploads[-1]["deleted"] == gone
    assert broker.areas[AREA] == mis.records()


def test_a_re_split_batch_keeps_its_place_before_later_batches_of_the_area(
    tmp_path: Path, mis: PhotoMis, broker: FakeBroker, clock: Clock
) -> None:
    agent = agent_with(tmp_path, mis, broker, clock)
    broker.max_body_bytes = 300_000
    agent.extract(AREA)  # one real full, which the broker will refuse
    mis.retake(["P00001"])
    clock.advance(60)
    newer = agent.extract(AREA)  # a delta with P00001's new photo, queued behind it
    assert agent.flush().clean
    assert broker.uploads[-1]["batch_id"] == newer.batch_id
    assert broker.areas[AREA] == mis.records()  # the old photo did not land last


@pytest.mark.parametrize("stated", [True, False], ids=["limit-stated", "no-limit-stated"])
def test_one_record_over_the_broker_limit_is_parked_by_id_then_left_out(
    tmp_path: Path, mis: PhotoMis, broker: FakeBroker, clock: Clock, stated: bool
) -> None:
    agent = agent_with(tmp_path, mis, broker, clock)
    broker.max_body_bytes, broker.limit_member = 300_000, stated
    mis.retake(["P00012"], size=400_000)
    content = mis.records()["P00012"]["photo"][:200]
    agent.extract(AREA)
    report = agent.flush()
    assert len(report.dead) == 1
    assert agent.state.dead_letter_count() == 1
    errors = agent.errors.items(clock())
    (parked,) = [e for e in errors if "parked" in e]
    assert "record P00012 alone" in parked
    assert ("300000 bytes" if stated else "not stated") in parked
    assert all(content not in e for e in errors)
    assert "P00012" not in broker.areas[AREA]
    # The broker's limit is known now: the next (full) extraction leaves the record out.
    assert agent.state.areas()[AREA].needs_full
    clock.advance(3600)
    result = agent.extract(AREA)
    assert result.mode == "full"
    assert result.rejected == 1
    assert agent.flush().clean
    assert agent.state.dead_letter_count() == 1
    assert any("record 12 (P00012)" in e for e in agent.errors.items(clock()))
    expected = mis.records()
    del expected["P00012"]
    assert broker.areas[AREA] == expected


def test_a_crash_after_k_batches_resumes_with_the_rest_applying_each_once(
    agent: Agent, broker: FakeBroker, mis: PhotoMis, clock: Clock
) -> None:
    result = agent.extract(AREA)
    total = len(result.batch_ids)
    broker.crash_after_applied = 3  # the third is applied, its answer never read
    with pytest.raises(Crash):
        agent.flush()
    assert len(broker.batches) == 3
    pending = [e.batch_id for e in agent.state.pending()]
    assert pending == list(result.batch_ids[2:])
    # A new process on the same state directory.
    agent.close()
    again = make_agent(agent.config, mis, broker, clock, AgentState.open)
    assert again.flush().clean
    assert len(broker.uploads) == total + 1  # the third was sent twice ...
    assert len(broker.batches) == total  # ... and applied once (idempotent replay)
    assert broker.areas[AREA] == mis.records()
