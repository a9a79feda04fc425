"""Write-back: partner POST -> broker -> agent heartbeat -> synthetic MIS -> results.

Starts a Valkey (embedded) and a real broker (uvicorn subprocess, SQLite) in a temporary
directory, a school whose synthetic MIS the real agent code serves, and a partner with a
read_write consent.  Measures, end to end (a write counts once the partner sees `applied`):

- throughput: a burst of writes of 20 session marks each, applied by successive heartbeats
  (each takes up to 20 writes, then re-extracts the area once); writes/s wall, and writes/s
  per core of CPU (partner client + agent in this process, broker, Valkey);
- latency POST -> applied with an immediate poll (the agent's heartbeat right after the
  POST: the floor), and with the agent running its normal loop (a heartbeat every
  `--heartbeat` seconds, 60 by default: the typical case).

Baseline, measured in the same run: the POST alone (validated, logged, sealed, queued),
so the ratios say what delivery and application add to accepting a write.

    uv run python bench/writeback.py [--writes 100] [--samples 5] [--normal-samples 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import psutil
from sqlmodel import select

# Run as a script, bench/ is first on sys.path: the repository root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.logs import configure as configure_logging
from agents.mis.synthetic import SyntheticMis
from agents.runner import Agent
from agents.state import AgentState
from bench._broker import Database, cpu_seconds
from bench.ingest import add_school, make_agent, running_broker
from broker.admin.consents import SchoolConsents
from broker.clock import SystemClock
from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from broker.resources import Resources
from broker.schools.models import School
from broker.settings import BrokerSettings, Environment, Settings
from cache.settings import CacheSettings
from consent.settings import ConsentSettings

DAY = date(2025, 11, 19)
MARKS = "attendance.marks"
AREAS = ("students.basic", MARKS, "behaviour")
RECORDS_PER_WRITE = 20
_KEYS = itertools.count()


class Partner:
    def __init__(self, url: str, school_id: str, token: str, pupils: list[str]) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60)  # fmt: skip
        self.school_id = school_id
        self.pupils = pupils

    def post(self) -> str:
        n = next(_KEYS)
        records = [
            {"student_id": self.pupils[(n + i) % len(self.pupils)], "date": DAY.isoformat(),
             "session": "PM", "mark": "L", "minutes_late": n % 30}
            for i in range(RECORDS_PER_WRITE)
        ]  # fmt: skip
        response = self.http.post(
            f"/v1/schools/{self.school_id}/writes/{MARKS}",
            json={"records": records},
            headers={"Idempotency-Key": f"bench-{n}"},
        )
        if response.status_code != 202:
            raise SystemExit(f"write refused: {response.status_code} {response.text[:300]}")
        return str(response.json()["write_id"])

    def status(self, write_id: str) -> str:
        return str(self.http.get(f"/v1/writes/{write_id}").json()["status"])


def setup(url: str, env: dict[str, str], data_dir: Path, root: Path) -> tuple[Agent, Partner]:
    key = add_school(env, data_dir, 1)
    mis = SyntheticMis(seed=31, pupils=300, phase="secondary", day=DAY,
                       write_store=root / "mis-writes.db")  # fmt: skip
    agent = make_agent(root, url, key, mis, 1)
    agent.run_once()  # uploads the school, reports what the MIS can write
    settings = load_settings_for(env)
    resources = Resources.build(settings, SystemClock())
    try:
        now = datetime.now(UTC)
        with session_scope(resources.engine) as session:
            school = session.exec(select(School).where(School.dfe_number == "3830001")).one()
            partner = register_partner(
                PartnerRepository(session), resources.sealer, name="Bench Registers",
                areas=AREAS, reasons={"behaviour": "bench"}, webhook_url=None, now=now,
            )  # fmt: skip
            SchoolConsents(session, school=school, actor="bench", now=now,
                           grace=settings.consent.revocation_grace).grant(
                partner.partner.id, AREAS, "read_write")  # fmt: skip
            school_id = school.id
    finally:
        resources.close()
    token = httpx.post(
        url + "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": partner.partner.client_id,
              "client_secret": partner.client_secret},
    ).json()["access_token"]  # fmt: skip
    pupils = [r["id"] for r in mis.extract("students.basic")]
    return agent, Partner(url, school_id, token, pupils)


def load_settings_for(env: dict[str, str]) -> Settings:
    """The broker's settings as its processes read them from `env`."""
    broker = BrokerSettings(
        data_dir=Path(env["MISBROKER_DATA_DIR"]),
        environment=Environment(env["MISBROKER_ENVIRONMENT"]),
        redis_url=env["MISBROKER_REDIS_URL"],
    )
    return Settings(broker=broker, consent=ConsentSettings(), cache=CacheSettings())


def applied(partner: Partner, write_id: str) -> Callable[[], bool]:
    return lambda: partner.status(write_id) == "applied"


def until(predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for writes to be applied")
        time.sleep(poll)


def throughput(agent: Agent, partner: Partner, broker: psutil.Process,
               valkey: psutil.Process, writes: int) -> None:  # fmt: skip
    me = psutil.Process()
    cpu = (cpu_seconds(me), cpu_seconds(broker), cpu_seconds(valkey))
    started = time.perf_counter()
    posted = [partner.post() for _ in range(writes)]
    post_wall = time.perf_counter() - started
    post_cpu = sum(cpu_seconds(p) for p in (me, broker, valkey)) - sum(cpu)
    while partner.status(posted[-1]) != "applied" or partner.status(posted[0]) != "applied":
        agent.heartbeat()
    wall = time.perf_counter() - started
    used = sum(cpu_seconds(p) for p in (me, broker, valkey)) - sum(cpu)
    statuses = {partner.status(w) for w in posted}
    if statuses != {"applied"}:
        raise SystemExit(f"not all applied: {statuses}")
    records = writes * RECORDS_PER_WRITE
    print(f"\n== throughput: {writes} writes of {RECORDS_PER_WRITE} marks, POST to applied")
    print(
        f"writes/s                 {writes / wall:>10.1f}   wall ({records / wall:,.0f} records/s)"
    )
    print(f"writes/s per core        {writes / used:>10.1f}   client + agent + broker + valkey CPU")
    print(
        f"baseline POST only       {writes / post_cpu:>10.1f}   writes/s per core (accept + queue)"
    )
    print(
        f"ratio POST/end-to-end    {(writes / post_cpu) / (writes / used):>10.1f}x  CPU per write"
    )
    print(f"POSTs alone              {writes / post_wall:>10.1f}   writes/s wall")


def latency_immediate(agent: Agent, partner: Partner, samples: int) -> float:
    times, posts = [], []
    for _ in range(samples):
        started = time.perf_counter()
        write_id = partner.post()
        posts.append(time.perf_counter() - started)
        agent.heartbeat()
        until(applied(partner, write_id), 120)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"\n== latency POST -> applied, immediate poll ({samples} samples)")
    print(f"median                   {median * 1000:>10.0f} ms   (min {min(times) * 1000:.0f}, "
          f"max {max(times) * 1000:.0f})")  # fmt: skip
    print(f"baseline POST alone      {statistics.median(posts) * 1000:>10.0f} ms")
    print(f"ratio                    {median / statistics.median(posts):>10.1f}x")
    return median


def latency_normal(agent: Agent, partner: Partner, samples: int, beat: int) -> None:
    """The agent's own loop, heartbeat every `beat` s; writes posted at random phases."""
    config = dataclasses.replace(agent.config, heartbeat_seconds=beat)
    adapter = agent.adapter
    agent.close()  # the loop's agent opens the same state in its own thread (SQLite's rule)
    stop = threading.Event()

    def loop_forever() -> None:
        looping = Agent(config, adapter, AgentState.open(config.state_dir))
        try:
            looping.run_forever(stop)
        finally:
            looping.close()

    loop = threading.Thread(target=loop_forever, daemon=True)
    loop.start()
    times = []
    try:
        for n in range(samples):
            time.sleep((n * 0.37 % 1.0) * beat)  # spread the posts over the heartbeat cycle
            started = time.perf_counter()
            write_id = partner.post()
            until(applied(partner, write_id), 3 * beat + 120, poll=0.25)
            times.append(time.perf_counter() - started)
    finally:
        stop.set()
        loop.join(timeout=120)
    print(f"\n== latency POST -> applied, agent heartbeat every {beat} s ({samples} samples)")
    print(
        f"median                   {statistics.median(times):>10.1f} s   "
        f"(min {min(times):.1f}, max {max(times):.1f}; expected about half a heartbeat)"
    )


def run(writes: int, samples: int, normal_samples: int, beat: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="mb-bench-wb-"))
    with (root / "agent.log").open("w", encoding="utf-8") as agent_log:
        configure_logging("WARNING", stream=agent_log)
        try:
            with running_broker(root, Database("sqlite", None)) as (
                url,
                env,
                data_dir,
                broker,
                valkey,
            ):
                agent, partner = setup(url, env, data_dir, root)
                stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M}Z"
                print(f"misbroker write-back bench, {stamp}, python {sys.version.split()[0]}")
                throughput(agent, partner, broker, valkey, writes)
                latency_immediate(agent, partner, samples)
                if normal_samples:
                    latency_normal(agent, partner, normal_samples, beat)
                else:
                    agent.close()
        except BaseException:
            print(f"failed: logs kept in {root} (api.log, agent.log)", file=sys.stderr)
            raise
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--normal-samples", type=int, default=3)
    parser.add_argument("--heartbeat", type=int, default=60)
    args = parser.parse_args()
    run(args.writes, args.samples, args.normal_samples, args.heartbeat)


if __name__ == "__main__":
    main()
