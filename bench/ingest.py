"""Ingest throughput: a 2,000-pupil school's core areas, agent -> broker -> committed cache.

Starts a Valkey (embedded) and a real broker (uvicorn subprocess, SQLite, or with
`--database postgresql` a throwaway PostgreSQL server started as the tests start one) in a
temporary directory, registers fresh schools with the operator CLI, and times the real agent code
path (diff + outbox + gzip + HTTP) until every batch is confirmed, i.e. committed in the
broker's cache.  CPU time of the agent, broker and Valkey processes is measured with
psutil to express throughput per core.  Nightly deltas (one school day of changes each)
are timed too, since most nights send deltas and only the weekly run is full: several
nights in a row in one measurement (`--days`), printed as one night's figures, since the
kernel counts the other processes' CPU in 10 ms ticks and one night is a few of them.

Baseline, measured in the same run: orjson + gzip of the same records in this process,
the least any upload path could cost; the ratio says what the whole path costs over it.
The machine's speed wanders (the baseline alone moved between 4.3 and 6.2 us a record in
one session), so it is measured next to each run, just before its full upload and just
after its delta, and each run is set against its own.
One school uploads first, unmeasured in the figures (its own line): a process's first-use
costs are paid once per process, not per school.
Both start from records in memory: the synthetic MIS renders each area before the clock
starts, or its rendering is taken out of the agent's CPU and the wall time (a real MIS's
own export cost is not the upload path's).
That rendering is printed on its own line.

    uv run python bench/ingest.py [--pupils 2000] [--runs 3] [--days 5]
        [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

# Run as a script, bench/ is first on sys.path, and a sibling bench/*.py named like one of
# our packages (bench/consent.py) would shadow it: the repository root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.config import DEFAULT_HEARTBEAT_SECONDS, parse_config
from agents.logs import configure as configure_logging
from agents.mis._synthetic.calendar import is_school_day
from agents.mis.base import MisAdapter
from agents.mis.synthetic import SyntheticMis
from agents.runner import Agent
from agents.state import AgentState
from bench._broker import Database, broker_env, cpu_seconds, database, free_port, wait_ready
from broker.embedded_redis import EmbeddedRedis
from consent.areas import CORE_AREAS

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2025, 11, 19)
SCHOOLS = 25_000
WINDOW_HOURS = 5.0
HEARTBEATS = 300


@dataclass(frozen=True)
class Upload:
    records: int  # records and deletions sent
    gz_bytes: int
    by_area: dict[str, tuple[int, float]]  # area -> (records, wall seconds)


@dataclass(frozen=True)
class Sample:
    upload: Upload
    wall: float
    agent_cpu: float
    broker_cpu: float
    valkey_cpu: float
    db_cpu: float  # the PostgreSQL server's processes; 0 on SQLite (in the broker's own)
    mis_cpu: float = 0.0  # rendering the synthetic MIS, before the clock: not counted
    base_us: float = 0.0  # the baseline's CPU per record, measured next to this run

    @property
    def ratio(self) -> float:
        """CPU per record over the baseline measured next to it."""
        return self.cpu / self.records * 1e6 / self.base_us

    @property
    def records(self) -> int:
        return self.upload.records

    @property
    def cpu(self) -> float:
        return self.agent_cpu + self.broker_cpu + self.valkey_cpu + self.db_cpu


def add_school(env: dict[str, str], data_dir: Path, n: int) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir), "school", "add",
         "--name", f"Bench School {n}", "--dfe-number", f"{3830000 + n}", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return str(orjson.loads(done.stdout)["agent_key"])


@contextmanager
def running_broker(
    root: Path, db: Database
) -> Iterator[tuple[str, dict[str, str], Path, psutil.Process, psutil.Process]]:
    redis = EmbeddedRedis(root / "run", root / "store", root / "run" / "r.sock", "512mb")
    (root / "run").mkdir(parents=True)
    (root / "store").mkdir()
    redis.start()
    data_dir = root / "broker"
    env = broker_env(data_dir, redis.url, "test") | db.env()
    add_school(env, data_dir, 0)  # creates and migrates the database before the API starts
    port = free_port()
    log = (root / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker.serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/healthz", proc, root / "api.log")
        assert redis.proc is not None
        yield url, env, data_dir, psutil.Process(proc.pid), psutil.Process(redis.proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        redis.stop()


class Prerendered:
    """The synthetic MIS with every core area rendered up front, as `MisAdapter`."""

    def __init__(self, mis: SyntheticMis) -> None:
        self.name = mis.name
        self._mis = mis
        self._records: dict[str, list[dict[str, Any]]] = {}
        self.render_cpu = 0.0  # the synthetic school's own work, added up: CPU seconds
        self.render_wall = 0.0  # and wall seconds

    def render(self) -> None:
        """Render the MIS as it is now (call again after `advance`)."""
        with self._own_work():
            self._records = {area: list(self._mis.extract(area)) for area in CORE_AREAS}

    def next_school_day(self) -> None:
        """On to the next school day (a weekend's or a holiday's changes come with it)."""
        with self._own_work():
            self._mis.advance(1)
            while not is_school_day(self._mis.day):
                self._mis.advance(1)

    @contextmanager
    def _own_work(self) -> Iterator[None]:
        """Counted in `render_cpu` and `render_wall`: the school's work, not the upload's."""
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.render_cpu += time.process_time() - cpu
            self.render_wall += time.perf_counter() - wall

    def areas(self) -> frozenset[str]:
        return frozenset(self._records)

    def extract(self, area: str) -> Iterator[dict[str, Any]]:
        return iter(self._records[area])


def make_agent(root: Path, url: str, key: str, mis: MisAdapter, n: int) -> Agent:
    document = {
        "broker_url": url,
        "agent_key": key,
        "state_dir": str(root / f"agent-{n}"),
        "mis": {"adapter": "synthetic"},
        "upload": {"retry_budget_seconds": 60, "retry_cap_seconds": 2},
    }
    config = parse_config(document, root)
    return Agent(config, mis, AgentState.open(config.state_dir))


def measure(
    agent: Agent,
    mis: Prerendered,
    broker: psutil.Process,
    valkey: psutil.Process,
    db: Database,
    work: Callable[[], Upload],
) -> Sample:
    """CPU and wall time of `work`, the MIS rendered first.  This process's CPU is read in
    nanoseconds, the others' from the kernel in 10 ms ticks (hence the long deltas).  The
    MIS's work inside `work` (a delta's later days) is taken out of this process's CPU and
    of the wall time; this process's reading is the innermost, so that reading the others
    (a walk of /proc for PostgreSQL's) is not counted as the agent's."""
    mis.render_cpu = mis.render_wall = 0.0
    mis.render()
    rendered_cpu, rendered_wall = mis.render_cpu, mis.render_wall

    def others() -> tuple[float, float, float]:
        return cpu_seconds(broker), cpu_seconds(valkey), db.cpu_seconds()

    others_before = others()
    own_before, started = time.process_time(), time.perf_counter()
    done = work()
    own_after, wall = time.process_time(), time.perf_counter() - started
    others_after = others()
    if agent.state.pending():
        raise SystemExit("uploads did not all go through: see api.log")
    broker_cpu, valkey_cpu, db_cpu = (
        b - a for a, b in zip(others_before, others_after, strict=True)
    )
    agent_cpu = own_after - own_before - (mis.render_cpu - rendered_cpu)
    wall -= mis.render_wall - rendered_wall
    return Sample(done, wall, agent_cpu, broker_cpu, valkey_cpu, db_cpu, mis.render_cpu)


def upload(agent: Agent, *, full: bool) -> Upload:
    """Every core area extracted and spooled, then the outbox sent until confirmed: the
    agent's own cycle (`Agent.run_once`), so small batches go several to a request."""
    total, size, by_area = 0, 0, {}
    for area in sorted(CORE_AREAS):
        started = time.perf_counter()
        result = agent.extract(area, full=full)
        if not result.ok or result.batch_id is None:
            raise SystemExit(f"extraction failed: {result.describe()}")
        size += sum(len(agent.state.body(b) or b"") for b in result.batch_ids)
        sent = result.upserts + result.deleted
        by_area[area] = (sent, time.perf_counter() - started)
        total += sent
    report = agent.flush()
    if not report.clean or report.dead or report.dropped:
        raise SystemExit(f"upload failed: {report}; see api.log")
    return Upload(total, size, by_area)


def deltas(agent: Agent, mis: Prerendered, days: int) -> Upload:
    """`days` school nights of deltas, one school day of changes each: the first is rendered
    already (`measure`), each later one before its upload."""
    total, size, by_area = 0, 0, dict[str, tuple[int, float]]()
    for day in range(days):
        if day:
            mis.next_school_day()
            mis.render()
        night = upload(agent, full=False)
        total, size = total + night.records, size + night.gz_bytes
        for area, (sent, spent) in night.by_area.items():
            before, took = by_area.get(area, (0, 0.0))
            by_area[area] = (before + sent, took + spent)
    return Upload(total, size, by_area)


def per_night(sample: Sample, days: int) -> Sample:
    """A sample of `days` nights as one night's: every figure over `days`."""
    done = sample.upload
    each = Upload(
        round(done.records / days),
        round(done.gz_bytes / days),
        {area: (round(n / days), t / days) for area, (n, t) in done.by_area.items()},
    )
    return replace(
        sample,
        upload=each,
        wall=sample.wall / days,
        agent_cpu=sample.agent_cpu / days,
        broker_cpu=sample.broker_cpu / days,
        valkey_cpu=sample.valkey_cpu / days,
        db_cpu=sample.db_cpu / days,
        mis_cpu=sample.mis_cpu / days,
    )


def baseline(mis: SyntheticMis, min_cpu: float = 1.0) -> float:
    """orjson + gzip of every core area: CPU microseconds per record, in this process.

    Passes repeat until `min_cpu` seconds: CPU times tick in 10 ms, and one pass of a
    2,000-pupil school takes about 80 ms, so a single pass was off by up to an eighth.
    """
    records = {area: list(mis.extract(area)) for area in sorted(CORE_AREAS)}
    passes, before = 0, time.process_time()
    while True:
        for area, rows in records.items():
            gzip.compress(orjson.dumps({"area": area, "records": rows}), compresslevel=6, mtime=0)
        passes += 1
        spent = time.process_time() - before
        if spent >= min_cpu:
            return spent / passes / sum(len(r) for r in records.values()) * 1e6


def report(title: str, samples: list[Sample]) -> None:
    median = statistics.median(s.wall for s in samples)
    s = min(samples, key=lambda x: abs(x.wall - median))
    window = WINDOW_HOURS * 3600
    per_core = s.records / s.cpu
    base_rate = 1e6 / s.base_us
    broker_cores = SCHOOLS * s.broker_cpu / window
    print(f"\n== {title}: the median of {len(samples)} run(s)")
    print(f"records sent             {s.records:>10,}   ({s.upload.gz_bytes / 1e6:.2f} MB gzipped)")
    print(f"seconds per school       {s.wall:>10.2f}   wall, agent start to committed cache")
    print(f"records/s                {s.records / s.wall:>10,.0f}   wall, one school at a time")
    print(f"CPU seconds              {s.cpu:>10.2f}   agent {s.agent_cpu:.2f}, broker "
          f"{s.broker_cpu:.2f}, valkey {s.valkey_cpu:.2f}, postgresql {s.db_cpu:.2f}")  # fmt: skip
    print(f"CPU us per record        {s.cpu / s.records * 1e6:>10.1f}   all processes; "
          f"broker {s.broker_cpu / s.records * 1e6:.1f}; "
          f"baseline {s.base_us:.1f}")  # fmt: skip
    print(f"MIS rendering (apart)    {s.mis_cpu / s.records * 1e6:>10.1f}   us per record sent; "
          "not in the figures, as not in the baseline")  # fmt: skip
    print(
        f"records/s per core       {per_core:>10,.0f}   agent + broker + valkey (+ postgresql) CPU"
    )
    print(f"records/s per core       {s.records / s.broker_cpu:>10,.0f}   broker CPU only")
    print(f"baseline orjson+gzip     {base_rate:>10,.0f}   records/s per core (same records)")
    print(f"ratio baseline/path      {s.ratio:>10.1f}x  CPU per record")
    if len(samples) > 1:  # the machine's speed wanders: each run against its own baseline
        ratios = ", ".join(f"{x.ratio:.1f}x" for x in samples)
        bases = ", ".join(f"{x.base_us:.1f}" for x in samples)
        print(f"ratio, every run         {ratios}   (baselines {bases} us)")
    slowest = sorted(s.upload.by_area.items(), key=lambda kv: -kv[1][1])[:3]
    print("slowest extractions      " + ", ".join(
        f"{a} {t:.2f}s ({n:,})" for a, (n, t) in slowest))  # fmt: skip
    print(f"-- 25,000 schools in a {WINDOW_HOURS:.0f}-hour night window")
    print(f"records/s to sustain     {SCHOOLS * s.records / window:>10,.0f}")
    print(f"broker cores (CPU-bound) {broker_cores:>10.1f}   "
          f"{SCHOOLS * s.broker_cpu / 3600:,.1f} core-hours; x1.5 headroom: "
          f"{broker_cores * 1.5:.1f}")  # fmt: skip
    print(f"uploads in flight        {SCHOOLS * s.wall / window:>10.1f}   "
          "at this per-school wall time (the rest is I/O wait)")  # fmt: skip


@dataclass(frozen=True)
class Heartbeats:
    count: int
    broker_cpu: float  # seconds, for `count` heartbeats
    db_cpu: float  # seconds, the PostgreSQL server's for `count` heartbeats; 0 on SQLite
    floor_cpu: float  # seconds, for `count` GET /healthz on the same kept-alive connection


def heartbeats(
    agent: Agent, url: str, broker: psutil.Process, db: Database, count: int
) -> Heartbeats:
    """Broker CPU of the agent's heartbeat (telemetry in, commands and writes out), against
    the same number of bare `/healthz` requests: the HTTP stack's own floor."""
    for _ in range(20):  # first-use costs (statement caches) are not a heartbeat's
        agent.heartbeat()
    before, db_before = cpu_seconds(broker), db.cpu_seconds()
    for _ in range(count):
        agent.heartbeat()
    spent, db_spent = cpu_seconds(broker) - before, db.cpu_seconds() - db_before
    with httpx.Client(base_url=url) as client:
        for _ in range(20):
            client.get("/healthz")
        before = cpu_seconds(broker)
        for _ in range(count):
            client.get("/healthz").raise_for_status()
        floor = cpu_seconds(broker) - before
    return Heartbeats(count, spent, db_spent, floor)


def report_heartbeats(beats: Heartbeats, interval: int) -> None:
    each = beats.broker_cpu / beats.count
    floor = beats.floor_cpu / beats.count
    print(f"\n== heartbeats: {beats.count:,} from one agent, one at a time")
    print(f"broker CPU per heartbeat {each * 1e3:>10.2f}   ms; a bare GET /healthz: "
          f"{floor * 1e3:.2f} ms")  # fmt: skip
    print(f"ratio healthz/heartbeat  {each / floor:>10.1f}x  broker CPU per request")
    db_each = beats.db_cpu / beats.count
    if db_each:
        print(f"PostgreSQL CPU each      {db_each * 1e3:>10.2f}   ms")
    cores = SCHOOLS * each / interval
    print(f"-- 25,000 schools, one heartbeat every {interval} s (the agent's default)")
    print(f"broker cores (CPU-bound) {cores:>10.1f}   all day; x1.5 headroom: {cores * 1.5:.1f}")
    if db_each:
        print(f"PostgreSQL cores         {SCHOOLS * db_each / interval:>10.1f}   all day")


@contextmanager
def profiled(proc: psutil.Process, out: Path | None) -> Iterator[None]:
    """py-spy sampling `proc` (threads on the CPU, system calls included) while inside;
    collapsed stacks to `out`, which flamegraph.pl or speedscope read."""
    if out is None:
        yield
        return
    argv = ["py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "500"]
    spy = subprocess.Popen(
        [*argv, "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        _, err = spy.communicate(timeout=60)
        if spy.returncode not in (0, -signal.SIGINT):
            print(f"py-spy failed: {err.decode(errors='replace').strip()}", file=sys.stderr)


def run(pupils: int, runs: int, days: int, kind: str, profile: Path | None = None) -> None:
    root = Path(tempfile.mkdtemp(prefix="mb-bench-"))
    with (root / "agent.log").open("w", encoding="utf-8") as agent_log:
        configure_logging("WARNING", stream=agent_log)
        try:
            with database(kind) as db:
                _run(root, pupils, runs, days, db, profile)
        except BaseException:
            print(f"failed: logs kept in {root} (api.log, agent.log)", file=sys.stderr)
            raise
    shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, pupils: int, runs: int, days: int, db: Database, profile: Path | None) -> None:
    with running_broker(root, db) as (url, env, data_dir, broker, valkey):
        mis = SyntheticMis(seed=2000, pupils=pupils, phase="secondary", day=DAY)
        fulls, nights = [], []
        # School 0 warms up, unmeasured in the figures: each process pays its first-use costs
        # (lazy imports, SQLAlchemy's statement cache, the first connections) once, and the
        # 25,000 schools of a night share them.  They added 20-40% to the first school.
        for n in range(0, runs + 1):
            school = SyntheticMis(seed=2000 + n, pupils=pupils, phase="secondary", day=DAY)
            source = Prerendered(school)
            agent = make_agent(root, url, add_school(env, data_dir, n + 1), source, n)
            agent_profile = None if profile is None else profile.with_suffix(".agent.raw")
            base = baseline(mis)  # next to each run: the machine's speed wanders
            with (
                profiled(broker, profile if n == 1 else None),
                profiled(psutil.Process(), agent_profile if n == 1 else None),
            ):
                full = replace(
                    measure(agent, source, broker, valkey, db, partial(upload, agent, full=True)),
                    base_us=base,
                )
            source.next_school_day()
            delta_profile = None if profile is None else profile.with_suffix(".delta.raw")
            with profiled(broker, delta_profile if n == 1 else None):
                week = partial(deltas, agent, source, days)
                delta = per_night(measure(agent, source, broker, valkey, db, week), days)
            delta = replace(delta, base_us=baseline(mis))
            if n == 0:
                warm_up = (full, delta)
            else:
                fulls.append(full)
                nights.append(delta)
            if n == runs:
                beats = heartbeats(agent, url, broker, db, HEARTBEATS)
            agent.close()
        stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M}Z"
        print(f"misbroker ingest bench, {stamp}, python {sys.version.split()[0]}")
        print(f"database                 {db.describe()}")
        report(f"full upload, {pupils:,} pupils, all core areas", fulls)
        report(f"nightly delta, one school day of changes: a night of {days} in a row", nights)
        print("\n== warm-up school, the first after start (not in the figures above)")
        for name, first in zip(("full upload", "nightly delta"), warm_up, strict=True):
            spent = first.cpu / first.records * 1e6
            print(f"{name:<24} {first.ratio:>10.1f}x  CPU per record; "
                  f"{spent:.1f} us, baseline {first.base_us:.1f}")  # fmt: skip
        report_heartbeats(beats, DEFAULT_HEARTBEAT_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pupils", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--days",
        type=int,
        default=5,
        help="nights of deltas measured together for each school (a night's CPU is a few "
        "of the kernel's 10 ms ticks: one alone wandered by a fifth)",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the broker's database; postgresql: a throwaway server, as the tests start",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="py-spy samples the broker during the second school's full upload (the first's "
        "with one run): collapsed stacks to FILE, the agent's (this process) to FILE with the "
        "suffix .agent.raw, and the broker's during that school's delta to FILE with the "
        "suffix .delta.raw",
    )
    args = parser.parse_args()
    if args.days < 1 or args.runs < 1:
        parser.error("--runs and --days must be at least 1")
    run(args.pupils, args.runs, args.days, args.database, args.profile)


if __name__ == "__main__":
    main()
