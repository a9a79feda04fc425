"""Large areas through the real broker (uvicorn subprocess, SQLite, Valkey).

- a school's photos, far over a small `max_batch_bytes`, arrive whole in several batches,
  and later deletions (a delta, then a split full) remove them from the cache;
- a broker whose `upload_max_bytes` is below the agent's limit answers 413; the agent cuts
  the batch to the stated limit and every record arrives;
- the agent dies after k batches of an upload (in-process, and kill -9 of the CLI): the
  next run sends the rest, and every batch is applied exactly once.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.config import parse_config
from agents.runner import Agent
from agents.state import AgentState
from tests.agents.agent_broker import (
    ROOT,
    LiveBroker,
    add_school,
    broker_records,
    live_broker,
    upload_batches,
    without_nulls,
)
from tests.agents.photo_mis import AREA, PhotoMis
from tests.agents.test_agent_e2e import agent_command
from tests.support.gate import upload_gate

LIMIT = 200_000
BROKER_LIMIT = 300_000
_DFE_NUMBERS = itertools.count(5100)


class Crash(BaseException):
    """The agent's process dying: nothing in the agent catches it."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("broker")
    add_school(data_dir, redis_url, "Photo Primary", "3840000")  # creates the database
    with live_broker(data_dir, redis_url) as running:
        yield running


@pytest.fixture(scope="module")
def small_broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("small-broker")
    add_school(data_dir, redis_url, "Tight Limits Primary", "3850000")
    limit = str(BROKER_LIMIT)
    with live_broker(data_dir, redis_url, MISBROKER_UPLOAD_MAX_BYTES=limit) as running:
        yield running


def new_school(broker: LiveBroker) -> tuple[str, str]:
    return add_school(
        broker.data_dir, broker.redis_url, "Large Photos Academy", f"384{next(_DFE_NUMBERS):04d}"
    )


def agent_for(
    tmp_path: Path,
    broker: LiveBroker,
    key: str,
    mis: PhotoMis,
    *,
    transport: httpx.BaseTransport | None = None,
    **upload: Any,
) -> Agent:
    document = {
        "broker_url": broker.url,
        "agent_key": key,
        "state_dir": str(tmp_path / "agent-state"),
        "mis": {"adapter": "synthetic"},  # replaced by `mis`; the config must name one
        "upload": {"retry_budget_seconds": 60, "retry_cap_seconds": 2, **upload},
    }
    config = parse_config(document, tmp_path)
    return Agent(config, mis, AgentState.open(config.state_dir), transport=transport)


def assert_cache_equals(broker: LiveBroker, school_id: str, mis: PhotoMis) -> None:
    held = without_nulls(broker_records(broker.settings(), school_id, AREA))
    assert held.keys() == mis.photos.keys()
    assert held == without_nulls(mis.records())


def test_photos_over_the_batch_limit_arrive_whole_and_deletions_remove_them(
    tmp_path: Path, broker: LiveBroker
) -> None:
    school_id, key = new_school(broker)
    mis = PhotoMis(40, seed=11)  # ~1.9 MB of JSON
    # Six leavers of 40 is more than the mass-deletion guard lets through by default: this
    # school's agent says so in its config (and tells the broker with each upload).
    agent = agent_for(tmp_path, broker, key, mis, max_batch_bytes=LIMIT, max_deletion_count=10)
    first = agent.extract(AREA)
    assert (first.mode, first.split) == ("full", True)
    assert len(first.batch_ids) >= 8
    assert agent.flush().clean, broker.log_tail()
    assert_cache_equals(broker, school_id, mis)
    applied = {b.batch_id: b.mode for b in upload_batches(broker.settings(), school_id)}
    assert applied == dict.fromkeys(first.batch_ids, "delta")

    # A day later: new photos, leavers; a delta in several batches, deletions last.
    ids = sorted(mis.photos)
    mis.retake(ids[:12])
    mis.remove(ids[20:26])
    delta = agent.extract(AREA)
    assert delta.mode == "delta"
    assert len(delta.batch_ids) > 1
    assert delta.deleted == 6
    assert agent.flush().clean
    assert_cache_equals(broker, school_id, mis)

    # The weekly full, still too large for one batch, deletes what the MIS lost since.
    mis.remove(ids[30:33])
    mis.admit(["N00001"])
    full = agent.extract(AREA, full=True)
    assert (full.mode, full.split, full.deleted) == ("full", True, 3)
    assert agent.flush().clean
    assert_cache_equals(broker, school_id, mis)
    assert len(upload_batches(broker.settings(), school_id)) == len(
        first.batch_ids + delta.batch_ids + full.batch_ids
    )


def test_a_broker_with_a_lower_limit_answers_413_and_the_agent_re_splits(
    tmp_path: Path, small_broker: LiveBroker
) -> None:
    school_id, key = new_school(small_broker)
    mis = PhotoMis(40, seed=12)
    agent = agent_for(tmp_path, small_broker, key, mis)  # the default 8 MiB: one full batch
    full = agent.extract(AREA)
    assert (full.mode, full.split, len(full.batch_ids)) == ("full", False, 1)
    report = agent.flush()
    assert report.clean, small_broker.log_tail()
    assert report.resplit == [full.batch_id]
    assert agent.state.dead_letter_count() == 0
    assert agent.state.upload_limit() == BROKER_LIMIT  # from the problem's `limit_bytes`
    assert_cache_equals(small_broker, school_id, mis)

    # Later extractions cut to the broker's limit up front: no further 413.
    ids = sorted(mis.photos)
    mis.retake(ids[:15])
    mis.remove(ids[-4:])
    delta = agent.extract(AREA)
    assert len(delta.batch_ids) > 1
    report = agent.flush()
    assert report.clean
    assert report.resplit == []
    assert_cache_equals(small_broker, school_id, mis)


class DiesAfter(httpx.BaseTransport):
    """The real broker, until the agent dies just after its n-th upload was applied."""

    def __init__(self, uploads: int) -> None:
        self._inner = httpx.HTTPTransport()
        self._left = uploads

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path == "/v1/agent/uploads":
            self._left -= 1
            if self._left == 0:
                response.read()
                raise Crash("killed before the answer was read")
        return response

    def close(self) -> None:
        self._inner.close()


def test_an_agent_dying_between_batches_resumes_and_applies_each_once(
    tmp_path: Path, broker: LiveBroker
) -> None:
    school_id, key = new_school(broker)
    mis = PhotoMis(30, seed=13)
    agent = agent_for(tmp_path, broker, key, mis, transport=DiesAfter(3), max_batch_bytes=LIMIT)
    result = agent.extract(AREA)
    with pytest.raises(Crash):
        agent.flush()
    assert len(upload_batches(broker.settings(), school_id)) == 3
    assert [e.batch_id for e in agent.state.pending()] == list(result.batch_ids[2:])
    agent.close()

    resumed = agent_for(tmp_path, broker, key, mis, max_batch_bytes=LIMIT)
    report = resumed.flush()
    assert report.clean
    assert report.confirmed == list(result.batch_ids[2:])  # the third: an idempotent replay
    assert sorted(b.batch_id for b in upload_batches(broker.settings(), school_id)) == sorted(
        result.batch_ids
    )
    assert_cache_equals(broker, school_id, mis)
    resumed.close()


@pytest.mark.slow
def test_kill_9_between_batches_of_the_cli_then_run_again(
    tmp_path: Path, broker: LiveBroker
) -> None:
    school_id, key = new_school(broker)
    mis = PhotoMis(120, seed=14)  # ~5.7 MB of JSON: some 30 batches
    mis.write_csv_export(tmp_path / "exports")
    config = tmp_path / "agent.toml"
    with upload_gate(broker.url) as gate:
        config.write_text(
            f"""
broker_url = "{gate.url}"
agent_key = "{key}"
state_dir = "agent-state"
[mis]
adapter = "csv"
directory = "exports"
[upload]
max_batch_bytes = {LIMIT}
retry_cap_seconds = 2
retry_budget_seconds = 120
""",
            encoding="utf-8",
        )
        gate.close_after(3)  # three batches land, then the agent dies with the fourth in flight
        with (tmp_path / "agent.log").open("ab") as stderr:
            proc = subprocess.Popen(
                agent_command(config, "once"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            gate.wait_holding()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            gate.reopen()
        state = AgentState.open(tmp_path / "agent-state")
        left = len(state.pending())
        state.close()
        assert left > 0, "every batch was sent before the kill: make the school bigger"
        sent_before = len(upload_batches(broker.settings(), school_id))
        assert sent_before == 3

        done = subprocess.run(
            agent_command(config, "once"), cwd=ROOT, capture_output=True, timeout=180,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    applied = upload_batches(broker.settings(), school_id)
    assert sent_before < len(applied)
    assert {b.mode for b in applied} == {"delta"}
    assert_cache_equals(broker, school_id, mis)
