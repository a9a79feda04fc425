"""The agent against the real broker (uvicorn subprocess, SQLite, Valkey): the issue's checks.

- a synthetic secondary school of 1,200 pupils goes through the agent to the broker's cache;
  a day of mutations produces a delta, with deletions, that the cache then shows;
- faults: the agent killed (-9) mid-upload and restarted until done; the broker stopped
  mid-upload and restarted; duplicate and out-of-order batches.  Afterwards the cache
  equals the MIS exactly.
"""

from __future__ import annotations

import gzip
import itertools
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from agents.config import parse_config
from agents.diff import compute
from agents.extract import build_body
from agents.mis.synthetic import SyntheticMis
from agents.runner import Agent
from agents.state import AgentState, iso
from agents.uploader import Outcome
from consent.areas import CORE_AREAS
from tests.agents.agent_broker import (
    ROOT,
    LiveBroker,
    add_school,
    broker_records,
    command_states,
    live_broker,
    queue_commands,
    without_nulls,
)
from tests.support.gate import Hold, upload_gate

pytestmark = pytest.mark.slow

DAY = date(2025, 11, 19)  # a Wednesday in the autumn term
SCHEDULED = CORE_AREAS | {"attendance.marks", "behaviour"}
_DFE_NUMBERS = itertools.count(4012)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("broker")
    add_school(data_dir, redis_url, "Migrating Academy", "3830000")  # creates the database
    with live_broker(data_dir, redis_url) as running:
        yield running


@pytest.fixture
def school(broker: LiveBroker) -> tuple[LiveBroker, str, str]:
    """A new school (so a clean cache) on the module's broker, which is restarted if down."""
    if broker.proc is None:
        broker.start()
    dfe_number = f"383{next(_DFE_NUMBERS):04d}"
    school_id, key = add_school(broker.data_dir, broker.redis_url, "Northfield Academy", dfe_number)
    return broker, school_id, key


def agent_for(tmp_path: Path, broker: LiveBroker, key: str, mis: SyntheticMis) -> Agent:
    document = {
        "broker_url": broker.url,
        "agent_key": key,
        "state_dir": str(tmp_path / "agent-state"),
        "mis": {"adapter": "synthetic"},
        "upload": {"retry_budget_seconds": 60, "retry_cap_seconds": 2},
    }
    config = parse_config(document, tmp_path)
    return Agent(config, mis, AgentState.open(config.state_dir))


def assert_cache_equals_mis(
    broker: LiveBroker, school_id: str, mis: SyntheticMis, areas: frozenset[str] = SCHEDULED
) -> None:
    settings = broker.settings()
    for area in sorted(areas):
        held = without_nulls(broker_records(settings, school_id, area))
        expected = without_nulls({r["id"]: r for r in mis.extract(area)})
        assert held.keys() == expected.keys(), area
        assert held == expected, area


# --- the end-to-end check -----------------------------------------------------------------


def test_a_1200_pupil_school_and_a_day_of_mutations(
    tmp_path: Path, school: tuple[LiveBroker, str, str]
) -> None:
    broker, school_id, key = school
    mis = SyntheticMis(seed=1200, pupils=1200, phase="secondary", day=DAY)
    agent = agent_for(tmp_path, broker, key, mis)
    assert agent.run_once() is None
    assert agent.state.pending() == [], broker.log_tail()
    assert agent.errors.items(datetime.now(UTC)) == []  # the heartbeat was accepted too
    assert_cache_equals_mis(broker, school_id, mis)

    before_delta = datetime.now(UTC)
    old_marks = {r["id"] for r in mis.extract("attendance.marks")}
    mis.advance(1)
    results = [agent.extract(area) for area in sorted(SCHEDULED)]
    assert agent.flush().clean
    assert {r.mode for r in results} == {"delta"}
    changed = sum(r.upserts + r.deleted for r in results)
    assert 0 < changed < sum(r.records for r in results) // 4  # a delta, not a resend
    marks = next(r for r in results if r.area == "attendance.marks")
    assert marks.deleted > 0  # the oldest day of registers left the window
    assert_cache_equals_mis(broker, school_id, mis)

    # What a partner's `updated_since` read sees: the changes, deletions as tombstones.
    changes = broker_records(
        broker.settings(), school_id, "attendance.marks", updated_since=before_delta
    )
    gone = old_marks - {r["id"] for r in mis.extract("attendance.marks")}
    assert gone
    assert all(changes[i] == {"id": i, "deleted": True} for i in gone)
    assert len(changes) == marks.upserts + marks.deleted


# --- faults -------------------------------------------------------------------------------


def write_config(tmp_path: Path, broker_url: str, key: str, pupils: int) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
broker_url = "{broker_url}"
agent_key = "{key}"
state_dir = "agent-state"
[mis]
adapter = "synthetic"
seed = 77
pupils = {pupils}
phase = "secondary"
day = "{DAY.isoformat()}"
[upload]
retry_cap_seconds = 2
retry_budget_seconds = 120
timeout_seconds = 20
# Batches go several to a request up to this size together: small enough that a school's
# upload takes many requests, so the gate has requests to count and hold.
max_batch_bytes = 131072
""",
        encoding="utf-8",
    )
    return path


def agent_command(config: Path, *args: str) -> list[str]:
    script = shutil.which("misbroker-agent", path=str(Path(sys.executable).parent))
    head = [script] if script else [sys.executable, "-m", "agents"]
    return [*head, "--config", str(config), *args]


def start_agent(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        agent_command(config, *args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(config.parent / "agent.log").open("ab"),
    )


def test_kill_9_mid_upload_and_restart_until_done(
    tmp_path: Path, school: tuple[LiveBroker, str, str]
) -> None:
    """Each run is killed while an upload is in flight, after it made progress: the kill
    points are set by the gate, so they are the same on a fast machine and a loaded one."""
    broker, school_id, key = school
    holds = [Hold.BEFORE_BROKER, Hold.AFTER_BROKER, Hold.BEFORE_BROKER]
    with upload_gate(broker.url) as gate:
        config = write_config(tmp_path, gate.url, key, pupils=1200)
        for hold in holds:
            gate.close_after(2, hold)  # two more batches land, then the agent dies mid-upload
            proc = start_agent(config, "once")
            try:
                gate.wait_holding()
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                gate.reopen()
        assert gate.answered >= 2 * len(holds)
        done = subprocess.run(
            agent_command(config, "once"), cwd=ROOT, capture_output=True, timeout=180,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    mis = SyntheticMis(seed=77, pupils=1200, phase="secondary", day=DAY)
    assert_cache_equals_mis(broker, school_id, mis)


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_broker_stopped_mid_upload_then_restarted(
    tmp_path: Path, school: tuple[LiveBroker, str, str], how: str
) -> None:
    broker, school_id, key = school
    with upload_gate(broker.url) as gate:
        config = write_config(tmp_path, gate.url, key, pupils=1200)
        gate.close_after(1)
        proc = start_agent(config, "once")
        gate.wait_holding()  # one batch landed, the next is in flight: now the broker goes
        broker.stop(kill=how == "kill")
        gate.reopen()  # the held upload and its retries meet a broker that is down
        wait_for_log(config.parent / "agent.log", "upload failed, retrying", proc)
        broker.start()
        code = proc.wait(timeout=180)
    log = (config.parent / "agent.log").read_text()
    assert code == 0, log[-3000:]
    mis = SyntheticMis(seed=77, pupils=1200, phase="secondary", day=DAY)
    assert_cache_equals_mis(broker, school_id, mis)


def wait_for_log(log: Path, line: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the agent's log shows `line` (the agent must still be running meanwhile)."""
    deadline = time.monotonic() + 120
    while line not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.05)


def test_duplicate_and_out_of_order_batches(
    tmp_path: Path, school: tuple[LiveBroker, str, str]
) -> None:
    broker, school_id, key = school
    mis = SyntheticMis(seed=31, pupils=300, phase="secondary", day=DAY)
    agent = agent_for(tmp_path, broker, key, mis)
    area = "students.basic"
    areas = frozenset({area})

    first = agent.extract(area)
    assert first.batch_id is not None
    old_body = agent.state.body(first.batch_id)
    assert old_body is not None
    assert agent.flush().clean

    # Duplicate: the same outbox entry sent again is answered the same, applied once.
    again = agent.client().upload(old_body)
    assert again.outcome is Outcome.CONFIRMED
    assert again.body == {
        "batch_id": first.batch_id,
        "area": area,
        "applied": first.upserts,
        "deleted": 0,
    }
    assert_cache_equals_mis(broker, school_id, mis, areas)

    # A newer batch lands...
    mis.advance(1)
    assert agent.extract(area).mode == "delta"
    assert agent.flush().clean
    assert_cache_equals_mis(broker, school_id, mis, areas)

    # ... then an older one with a new batch id: refused with 409, dropped, nothing changes.
    stale = orjson.loads(gzip.decompress(old_body))
    stale["batch_id"] = str(uuid.uuid4())
    older = build_body(
        stale["batch_id"],
        area,
        datetime.fromisoformat(stale["extracted_at"].replace("Z", "+00:00")),
        compute(stale["records"], {}, full=True),
    )
    with agent.state.transaction() as db:
        db.execute(
            "INSERT INTO outbox(batch_id, area, mode, created_at, extracted_at, records,"
            " deleted, body_gz) VALUES (?, ?, 'full', ?, ?, ?, 0, ?)",
            (stale["batch_id"], area, iso(datetime.now(UTC)), stale["extracted_at"],
             len(stale["records"]), older),
        )  # fmt: skip
    report = agent.flush()
    assert report.dropped == [stale["batch_id"]]
    assert agent.state.pending() == []
    assert_cache_equals_mis(broker, school_id, mis, areas)
    # The agent no longer trusts its hashes for the area: the next upload is a full one.
    assert agent.state.areas()[area].needs_full
    resync = agent.extract(area)
    assert resync.mode == "full"
    assert agent.flush().clean
    assert_cache_equals_mis(broker, school_id, mis, areas)


def test_commands_round_trip_through_the_broker(
    tmp_path: Path, school: tuple[LiveBroker, str, str]
) -> None:
    broker, school_id, key = school
    mis = SyntheticMis(seed=5, pupils=100, phase="secondary", day=DAY)
    agent = agent_for(tmp_path, broker, key, mis)
    ids = queue_commands(
        broker.settings(),
        school_id,
        [
            ("extract", {"areas": ["groups", "staff.basic"], "full": True}),
            ("check_update", {}),
            ("configure", {"heartbeat_seconds": 30}),
            ("configure", {"broker_url": "https://elsewhere.example"}),
            ("reconnect", {}),
        ],
    )
    agent.heartbeat()
    states = command_states(broker.settings(), ids)
    assert [states[i][0] for i in ids] == ["done", "done", "done", "failed", "done"]
    assert "groups: full batch" in (states[ids[0]][1] or "")
    assert agent.config.heartbeat_seconds == 30
    assert_cache_equals_mis(broker, school_id, mis, frozenset({"groups", "staff.basic"}))


def test_misbroker_agent_check_and_status_against_the_broker(
    tmp_path: Path, school: tuple[LiveBroker, str, str]
) -> None:
    broker, _, key = school
    config = write_config(tmp_path, broker.url, key, pupils=50)
    check = subprocess.run(
        agent_command(config, "check"), cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    assert check.returncode == 0, check.stderr.decode()
    assert orjson.loads(check.stdout)["broker"]
    assert key.encode() not in check.stderr + check.stdout
    extract = subprocess.run(
        agent_command(config, "extract", "groups", "--full"), cwd=ROOT, capture_output=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert extract.returncode == 0, extract.stderr.decode()
    status = subprocess.run(
        agent_command(config, "status"), cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    body = orjson.loads(status.stdout)
    assert body["outbox"] == []
    assert body["areas"]["groups"]["ok"] is True
    assert (
        timedelta(0)
        <= datetime.now(UTC)
        - datetime.fromisoformat(
            body["areas"]["groups"]["last_confirmed_at"].replace("Z", "+00:00")
        )
        < timedelta(minutes=5)
    )
