"""Partner read throughput: 100-record pages of students.basic from the hot tier, over HTTP.

Starts a Valkey (embedded) and the real broker API (`python -m broker.serve`: uvicorn, one
process, SQLite, or with `--database postgresql` a throwaway PostgreSQL server started as
the tests start one) in a temporary directory, with a school, a partner with a consent for
students.basic and >= 1,000 pupils uploaded by the agent endpoint.  A load generator on
loopback (wrk if installed, else a Python asyncio one) then reads the first page over and
over with the partner's token: consent decision, access-log entry committed, page served
from the hot tier, exactly as in production.

Baseline, measured in the same run: a minimal FastAPI app under the same uvicorn options
(one worker, no access log) whose one route returns the same page bytes, precomputed.  Both
are loaded alternately, `--rounds` times each; the ratio of the median req/s says what the
read path costs over serving bytes (target: broker >= 0.6 of the baseline on SQLite, 0.75
on PostgreSQL).  With two or more cores the load generator, Valkey and PostgreSQL run on
one core and the servers on another.

With `--minimised` the partner is one whose consent approves only its required fields
(optional ones off) and shares only pupils in Years 10 and 11: every page is narrowed to
them (so holds fewer than 100 records) and named by that audience.  The baseline then
serves that narrowed page's bytes.  `make bench` runs both modes.

    uv run python bench/read.py [--seconds 10] [--connections 32] [--rounds 3] [--minimised]
                                [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import psutil

# Run as a script, bench/ is first on sys.path, and a sibling bench/*.py named like one of
# our packages (bench/consent.py) would shadow it: the repository root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._broker import Database, broker_env, cpu_seconds, database, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
AREA = "students.basic"
PAGE_LIMIT = 100
# High enough that no request of the run is refused; the limit travels in the token.
RATE_LIMIT_PER_MINUTE = 1_000_000_000
# The broker's req/s over the baseline's: SQLite's target, and PostgreSQL's (issue 15).
TARGET_RATIO = {"sqlite": 0.6, "postgresql": 0.75}
MINIMISED_PARTNER = "Bench Minimised"
MINIMISED_YEARS = ["Year 10", "Year 11"]
# Required fields on, optional ones off (not approved by the grant's default).
MINIMISED_REQUEST = {
    "areas": {
        AREA: {
            "reason": "Exam candidates",
            "fields": {
                **{
                    name: {"required": True, "reason": "Exam entries"}
                    for name in ("upn", "forename", "surname", "date_of_birth", "year_group")
                },
                **{
                    name: {"required": False, "reason": "Seating plans"}
                    for name in ("house", "gender", "registration_group", "exam_number")
                },
            },
        }
    }
}
WARMUP_SECONDS = 2
UVICORN_OPTIONS: dict[str, Any] = {  # as broker.serve runs the API
    "log_config": None,
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
}


# ---------------------------------------------------------------------------------------
# The baseline server (run in its own process: `read.py --serve-baseline PORT BODY_FILE`)


def baseline_app(body: bytes) -> Any:
    """One route, the same path as the broker's, answering the precomputed page bytes."""
    from fastapi import FastAPI
    from starlette.responses import Response

    app = FastAPI()

    @app.get("/v1/schools/{school_id}/data/{area}")
    async def page(school_id: str, area: str) -> Response:
        return Response(body, media_type="application/json")

    return app


def serve_baseline(port: int, body_file: Path) -> None:
    import uvicorn

    uvicorn.run(
        baseline_app(body_file.read_bytes()), host="127.0.0.1", port=port, **UVICORN_OPTIONS
    )


# ---------------------------------------------------------------------------------------
# The Python load generator, for machines without wrk (`read.py --python-loadgen ...`)


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


async def _python_load(
    url: str, headers: dict[str, str], connections: int, seconds: float
) -> dict[str, Any]:
    parts = httpx.URL(url)
    host, port = parts.host, parts.port or 80
    target = parts.raw_path.decode()
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    counts = {"non_2xx": 0, "errors": 0}
    deadline = time.perf_counter() + seconds

    async def one_connection() -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["errors"] += 1
            return
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    counts["non_2xx"] += 1
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            counts["errors"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return {
        "requests": n,
        "seconds": elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "non_2xx": counts["non_2xx"],
        "socket_errors": counts["errors"],
    }


def python_loadgen(url: str, headers: list[str], connections: int, seconds: float) -> None:
    hdrs = dict(h.split(": ", 1) for h in headers)
    coro = _python_load(url, hdrs, connections, seconds)
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


# ---------------------------------------------------------------------------------------
# Driving a load generator from the bench


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if found is None:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(found[1]) * _UNITS[found[2]]


def parse_wrk(output: str) -> LoadResult:
    def grab(pattern: str) -> re.Match[str]:
        found = re.search(pattern, output, re.MULTILINE)
        if found is None:
            raise ValueError(f"wrk output without {pattern!r}:\n{output}")
        return found

    done = grab(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return LoadResult(
        requests=int(done[1]),
        seconds=_ms(done[2] + done[3]) / 1000,
        p50_ms=_ms(grab(r"^\s*50%\s+(\S+)")[1]),
        p99_ms=_ms(grab(r"^\s*99%\s+(\S+)")[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


@dataclass(frozen=True)
class LoadGenerator:
    kind: str  # "wrk" or "python"
    connections: int

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(
                ["wrk", "--version"], capture_output=True, text=True, check=False
            ).stdout.split("Copyright")[0]
            return f"{version.strip()}, 1 thread, {self.connections} connections, keep-alive"
        why = "wrk not installed (scripts/ensure-wrk)" if shutil.which("wrk") is None else "asked"
        return (
            f"Python asyncio (raw streams, uvloop), {self.connections} connections, "
            f"keep-alive; {why}: one Python core may saturate before the baseline "
            "does, which flatters the ratio"
        )

    def run(self, url: str, headers: Sequence[str], seconds: float) -> LoadResult:
        if self.kind == "wrk":
            argv = ["wrk", "-t1", f"-c{self.connections}", f"-d{seconds:g}s", "--latency"]
            argv += [arg for h in headers for arg in ("-H", h)]
            done = subprocess.run(
                [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 60
            )
            return parse_wrk(done.stdout)
        argv = [sys.executable, __file__, "--python-loadgen", url]
        argv += ["--connections", str(self.connections), "--seconds", str(seconds)]
        argv += [arg for h in headers for arg in ("--header", h)]
        done = subprocess.run(
            argv, capture_output=True, text=True, check=True, timeout=seconds + 60
        )
        return LoadResult(**orjson.loads(done.stdout))


# ---------------------------------------------------------------------------------------
# Processes, cores and the broker's world


@dataclass(frozen=True)
class Cores:
    client: set[int] | None  # load generator, Valkey and this process
    server: set[int] | None  # the broker and the baseline

    def describe(self) -> str:
        if self.client is None or self.server is None:
            return "not pinned (fewer than 2 usable cores, or sched_setaffinity unavailable)"
        return (
            f"load generator, Valkey and this script on core {_fmt(self.client)}; "
            f"broker and baseline servers on core {_fmt(self.server)}"
        )


def _fmt(cores: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


def plan_cores() -> Cores:
    try:
        usable = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return Cores(None, None)
    if len(usable) < 2:
        return Cores(None, None)
    return Cores({usable[0]}, {usable[1]})


def pin(pid: int, cores: set[int] | None) -> bool:
    """Every thread of the process (threads made later inherit from their creator)."""
    if cores is None:
        return False
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), cores)
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class World:
    school_id: str
    agent_key: str
    client_id: str
    client_secret: str


def prepare_world(env: dict[str, str], minimised: bool = False) -> World:
    """Database, school, admin, partner (rate limit raised) and consent, in this process.

    `minimised`: the partner read is one with optional fields off and a year-group audience.
    """
    os.environ.update({k: v for k, v in env.items() if k.startswith("MISBROKER_")})
    from broker.db import make_engine, session_scope, upgrade
    from broker.demo import DEMO_PARTNER, _ensure_world
    from broker.keyring import load_key_provider
    from broker.partners.repository import PartnerRepository
    from broker.resources import Resources
    from broker.settings import load_settings

    settings = load_settings()
    load_key_provider(settings)  # development: creates the key file, before the API starts
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    resources = Resources.build(settings)
    try:
        creds = _ensure_world(resources)  # the demo's school, partner and consent
        client_id, client_secret = creds.client_id, creds.client_secret
        with session_scope(resources.engine) as session:
            partner = PartnerRepository(session).by_name(DEMO_PARTNER)
            assert partner is not None
            partner.rate_limit_per_minute = RATE_LIMIT_PER_MINUTE
            session.add(partner)
        if minimised:
            client_id, client_secret = _minimised_partner(resources, creds.school)
    finally:
        resources.close()
    return World(creds.school.id, creds.agent_key, client_id, client_secret)


def _minimised_partner(resources: Any, school: Any) -> tuple[str, str]:
    """A partner asking field by field, granted its required fields for Years 10-11 only."""
    from broker.admin.consents import SchoolConsents
    from broker.db import session_scope
    from broker.partners.repository import PartnerRepository
    from broker.partners.service import register_partner
    from consent.events import Audience

    now = resources.clock.now()
    with session_scope(resources.engine) as session:
        created = register_partner(
            PartnerRepository(session),
            resources.sealer,
            name=MINIMISED_PARTNER,
            areas=[],
            reasons={},
            webhook_url=None,
            now=now,
            request=MINIMISED_REQUEST,
        )
        created.partner.rate_limit_per_minute = RATE_LIMIT_PER_MINUTE
        session.add(created.partner)
        consents = SchoolConsents(
            session,
            school=school,
            actor="admin:bench",
            now=now,
            grace=resources.settings.consent.revocation_grace,
        )
        view = consents.grant(created.partner.id, [AREA], "read")
        consents.set_audience(view.consent.id, Audience(year_groups=frozenset(MINIMISED_YEARS)))
    return created.partner.client_id, created.client_secret


def upload_students(client: httpx.Client, world: World, pupils: int) -> int:
    """students.basic of a synthetic secondary school, sent as its agent would send it."""
    from agents.mis.synthetic import SyntheticMis
    from broker.demo import upload_full

    now = datetime.now(UTC)
    mis = SyntheticMis(seed=2026, pupils=pupils, phase="secondary", day=now.date())
    records = list(mis.extract(AREA))
    try:
        upload_full(client, world.agent_key, AREA, records, now)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    return len(records)


def sample_page(
    client: httpx.Client, url: str, headers: dict[str, str], minimised: bool = False
) -> httpx.Response:
    response = client.get(url, headers=headers)
    if response.status_code != 200:
        raise SystemExit(f"GET {url}: {response.status_code} {response.text[:300]}")
    records = orjson.loads(response.content)["data"]
    if minimised:
        years = {r.get("year_group") for r in records}
        if not records or not years <= set(MINIMISED_YEARS) or any("house" in r for r in records):
            raise SystemExit(f"GET {url}: not narrowed to the minimised consent: {years}")
    elif len(records) != PAGE_LIMIT:
        raise SystemExit(f"GET {url}: {len(records)} records, not {PAGE_LIMIT}")
    return response


def access_log_counts(env: dict[str, str], school_id: str) -> tuple[int, int, int]:
    """(entries, entries that served a full page, database bytes) for the school."""
    from sqlalchemy import func, text
    from sqlmodel import Session, col, select

    from broker.db import make_engine
    from consent.models import AccessLogRow

    db = Path(env["MISBROKER_DATA_DIR"]) / "misbroker.db"
    engine = make_engine(env.get("MISBROKER_DATABASE_URL") or f"sqlite:///{db}")
    try:
        with Session(engine) as session:
            rows = select(func.count()).where(col(AccessLogRow.school_id) == school_id)
            total = session.exec(rows).one()
            full = session.exec(rows.where(col(AccessLogRow.record_count) == PAGE_LIMIT)).one()
            if engine.dialect.name == "postgresql":
                sized = session.connection().execute(
                    text("SELECT pg_database_size(current_database())")
                )
                size = int(sized.scalar_one())
            else:
                size = sum(p.stat().st_size for p in db.parent.glob("misbroker.db*"))
    finally:
        engine.dispose()
    return int(total), int(full), size


def settled_log_count(env: dict[str, str], school_id: str) -> int:
    """The access-log count once reads still in flight after a run have been logged."""
    count = access_log_counts(env, school_id)[0]
    for _ in range(50):
        time.sleep(0.2)
        again = access_log_counts(env, school_id)[0]
        if again == count:
            break
        count = again
    return count


# ---------------------------------------------------------------------------------------
# The bench


@dataclass
class Target:
    name: str
    url: str
    headers: list[str]
    proc: psutil.Process
    runs: list[LoadResult]
    cpu_us_per_request: list[float]


def measure(
    gen: LoadGenerator, target: Target, valkey: psutil.Process, db: Database, seconds: float
) -> tuple[LoadResult, float, float]:
    """The run, and Valkey's and the database server's CPU us per request during it."""
    before = cpu_seconds(target.proc), cpu_seconds(valkey), db.cpu_seconds()
    result = gen.run(target.url, target.headers, seconds)
    cpu = cpu_seconds(target.proc) - before[0]
    valkey_cpu = cpu_seconds(valkey) - before[1]
    db_cpu = db.cpu_seconds() - before[2]
    target.runs.append(result)
    n = max(1, result.requests)
    target.cpu_us_per_request.append(cpu / n * 1e6)
    return result, valkey_cpu / n * 1e6, db_cpu / n * 1e6


def profile_broker(gen: LoadGenerator, target: Target, out: Path, seconds: float) -> None:
    """An extra, unmeasured run with py-spy sampling the broker: collapsed stacks to `out`
    (flamegraph.pl or speedscope read them), and the hottest functions printed."""
    argv = ["py-spy", "record", "--pid", str(target.proc.pid), "--format", "raw", "--gil"]
    argv += ["--rate", "500"]
    argv += ["--output", str(out), "--duration", f"{seconds:g}", "--nonblocking"]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    gen.run(target.url, target.headers, seconds)
    _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0:
        raise SystemExit(f"py-spy failed: {err.decode(errors='replace').strip()}")
    print(f"\nprofile       {out} (py-spy, threads holding the GIL; own time by function)")
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1]
        own[frame] = own.get(frame, 0) + int(count)
        total += int(count)
    for frame, samples in sorted(own.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {samples / max(1, total):6.1%}  {frame}")


def run(args: argparse.Namespace) -> None:
    with database(args.database) as db:
        _run(args, db)


def _run(args: argparse.Namespace, db: Database) -> None:
    root = Path(tempfile.mkdtemp(prefix="mb-bench-read-"))
    from broker.embedded_redis import EmbeddedRedis
    from broker.processes import spawn, stop

    cores = plan_cores()
    original_affinity = os.sched_getaffinity(0) if cores.client is not None else None
    redis = EmbeddedRedis(root / "run", root / "store", root / "run" / "r.sock", "512mb")
    servers: list[subprocess.Popen[bytes]] = []
    ok = False
    try:
        pin(os.getpid(), cores.client)  # children (Valkey, the load generator) inherit it
        redis.start()
        assert redis.proc is not None
        valkey = psutil.Process(redis.proc.pid)
        pin(valkey.pid, cores.client)
        env = broker_env(root / "broker", redis.url, "development") | db.env()
        for backing in db.processes():  # a backing service, as Valkey: on the client's core
            pin(backing.pid, cores.client)
        world = prepare_world(env, args.minimised)

        py = sys.executable
        api_port, api_log = free_port(), root / "api.log"
        api_url = f"http://127.0.0.1:{api_port}"
        argv = [py, "-m", "broker.serve", "--host", "127.0.0.1", "--port", str(api_port)]
        servers.append(spawn(argv, env=env, log_file=api_log, cwd=ROOT))
        wait_ready(api_url + "/readyz", servers[-1], api_log)
        pin(servers[-1].pid, cores.server)
        broker = psutil.Process(servers[-1].pid)

        page_path = f"/v1/schools/{world.school_id}/data/{AREA}?limit={PAGE_LIMIT}"
        with httpx.Client(base_url=api_url, timeout=60) as client:
            uploaded = upload_students(client, world, args.pupils)
            token = client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(world.client_id, world.client_secret),
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            sample_page(client, page_path, auth, args.minimised)  # warm tier -> hot tier
            page = sample_page(client, page_path, auth, args.minimised)  # the hot tier
        body = page.content

        base_port, base_log = free_port(), root / "baseline.log"
        base_url = f"http://127.0.0.1:{base_port}"
        (root / "page.json").write_bytes(body)
        argv = [py, __file__, "--serve-baseline", str(base_port), str(root / "page.json")]
        servers.append(spawn(argv, env=env, log_file=base_log, cwd=ROOT))
        wait_ready(base_url + page_path, servers[-1], base_log)
        pin(servers[-1].pid, cores.server)
        with httpx.Client(timeout=10) as client:
            if client.get(base_url + page_path).content != body:
                raise SystemExit("the baseline does not serve the broker's page bytes")

        gen = LoadGenerator(
            "wrk" if shutil.which("wrk") and args.loadgen != "python" else "python",
            args.connections,
        )
        auth_header = f"Authorization: Bearer {token}"
        targets = {
            "baseline": Target(
                "baseline", base_url + page_path, [], psutil.Process(servers[-1].pid), [], []
            ),
            "broker": Target("broker", api_url + page_path, [auth_header], broker, [], []),
        }

        print(
            f"misbroker read bench, {datetime.now(UTC):%Y-%m-%d %H:%M}Z, "
            f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
        )
        served = len(orjson.loads(body)["data"])
        print(
            f"page          {served} {AREA} records of {uploaded:,} uploaded, "
            f"{len(body):,} bytes of JSON, hot tier"
        )
        if args.minimised:
            print(
                f"consent       MINIMISED: required fields only (optional off), audience "
                f"{', '.join(MINIMISED_YEARS)}: a page of {PAGE_LIMIT} narrowed to {served}"
            )
        print(
            "broker        python -m broker.serve (uvicorn, 1 process, Valkey on a "
            "unix socket); consent check + access-log commit + hot page per request"
        )
        print(f"database      {db.describe()}")
        print(
            "baseline      minimal FastAPI route returning the same bytes, same uvicorn "
            "options (1 worker, no access log)"
        )
        print(f"load          {gen.describe()}")
        print(f"cores         {cores.describe()}")
        print(
            f"runs          {args.rounds} rounds x {args.seconds:g} s each, alternating, "
            f"after a {WARMUP_SECONDS} s warm-up of each"
        )

        valkey_us: list[float] = []
        db_us: list[float] = []
        for target in targets.values():
            gen.run(target.url, target.headers, WARMUP_SECONDS)
        log_before = settled_log_count(env, world.school_id)
        print(
            f"\n{'round':<6}{'server':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'non-2xx':>9}{'sock err':>9}{'CPU us/req':>12}"
        )
        for n in range(args.rounds):
            order = ("baseline", "broker") if n % 2 == 0 else ("broker", "baseline")
            for name in order:
                target = targets[name]
                result, valkey_per_request, db_per_request = measure(
                    gen, target, valkey, db, args.seconds
                )
                if name == "broker":
                    valkey_us.append(valkey_per_request)
                    db_us.append(db_per_request)
                print(
                    f"{n + 1:<6}{name:<10}{result.rps:>9,.0f}{result.p50_ms:>9.2f}"
                    f"{result.p99_ms:>9.2f}{result.non_2xx:>9}{result.socket_errors:>9}"
                    f"{target.cpu_us_per_request[-1]:>12.0f}"
                )

        log_after = settled_log_count(env, world.school_id)
        with httpx.Client(timeout=10) as client:
            after = sample_page(client, api_url + page_path, auth, args.minimised)
        total, full_pages, db_bytes = access_log_counts(env, world.school_id)
        if args.profile is not None:  # after the counts: its reads are not in them
            profile_broker(gen, targets["broker"], args.profile, args.seconds)
        sound = report(
            targets,
            valkey_us,
            db_us if db.server is not None else None,
            target=TARGET_RATIO[db.kind],
            same=after.content == body,
            logged=log_after - log_before,
            in_flight=args.rounds * args.connections,
            minimised=args.minimised,
        )
        print(
            f"access log    {total:,} entries in all, {full_pages:,} of them for "
            f"{PAGE_LIMIT} records; database files {db_bytes / 1e6:,.1f} MB"
        )
        if not sound:
            raise SystemExit("the broker failed requests or left reads unlogged: see above")
        ok = True
    finally:
        # A second Ctrl-C (uv forwards one too) must not cut the clean-up short; it is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in reversed(servers):
            stop(proc, 10.0)
        redis.stop()
        if original_affinity is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, original_affinity)
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"failed: logs kept in {root} (api.log, baseline.log)", file=sys.stderr)


def report(
    targets: dict[str, Target],
    valkey_us: list[float],
    db_us: list[float] | None,
    *,
    target: float,
    same: bool,
    logged: int,
    in_flight: int,
    minimised: bool = False,
) -> bool:
    """Print the summary; False if the broker failed a request or a read went unlogged."""
    base, broker = targets["baseline"], targets["broker"]

    def med(t: Target, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in t.runs))

    ratio = med(broker, "rps") / med(base, "rps")
    paired = statistics.median(b.rps / a.rps for a, b in zip(base.runs, broker.runs, strict=True))
    cpu_ratio = statistics.median(base.cpu_us_per_request) / statistics.median(
        broker.cpu_us_per_request
    )
    served = sum(r.requests for r in broker.runs)
    errors = sum(r.non_2xx + r.socket_errors for r in broker.runs)
    base_errors = sum(r.non_2xx + r.socket_errors for r in base.runs)
    # The load generator stops counting at its deadline with requests still in flight,
    # which the broker serves and logs: up to one more per connection per run.
    logged_ok = served <= logged <= served + in_flight
    print(f"\n{'median':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}")
    for t in (base, broker):
        print(
            f"{t.name:<14}{med(t, 'rps'):>9,.0f}{med(t, 'p50_ms'):>9.2f}"
            f"{med(t, 'p99_ms'):>9.2f}{statistics.median(t.cpu_us_per_request):>12.0f}"
        )
    print(f"{'valkey':<14}{statistics.median(valkey_us):>39.0f}   per broker request")
    if db_us is not None:
        print(f"{'postgresql':<14}{statistics.median(db_us):>39.0f}   per broker request")
    print(
        f"\nratio         broker/baseline req/s {ratio:.2f} (medians), {paired:.2f} (median of "
        f"rounds); target >= {target}: {'met' if ratio >= target else 'NOT met'}"
    )
    print(
        f"cpu ratio     baseline/broker CPU per request {cpu_ratio:.2f} "
        "(less sensitive to other load on the servers' core)"
    )
    print(
        f"errors        broker {errors} non-2xx or socket errors in {served:,} requests "
        f"(must be 0); baseline {base_errors}"
    )
    print(
        f"after         a sampled broker read is a 200 with "
        f"{'the narrowed' if minimised else PAGE_LIMIT} records, "
        f"{'the same' if same else 'DIFFERENT'} bytes as the baseline serves"
    )
    print(
        f"logged        {logged:,} access-log entries for {served:,} counted broker requests "
        f"(+ at most {in_flight} in flight at the runs' ends): "
        f"{'every read logged' if logged_ok else 'MISMATCH'}"
    )
    return errors == 0 and logged_ok and same


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10, help="per measured run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each server")
    parser.add_argument("--pupils", type=int, default=1200, help="students.basic records")
    parser.add_argument("--loadgen", choices=("auto", "python"), default="auto")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the broker's database; postgresql: a throwaway server, as the tests start",
    )
    parser.add_argument(
        "--minimised",
        action="store_true",
        help="read as a partner with optional fields off and a year-group audience",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="after the rounds, one more broker run under py-spy: collapsed stacks to FILE",
    )
    # Internal: the baseline server and the Python load generator run as this script.
    parser.add_argument(
        "--serve-baseline", nargs=2, metavar=("PORT", "BODY"), help=argparse.SUPPRESS
    )
    parser.add_argument("--python-loadgen", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--header", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), Path(args.serve_baseline[1]))
        return
    if args.python_loadgen:
        python_loadgen(args.python_loadgen, args.header, args.connections, args.seconds)
        return
    if args.pupils < 1000:
        parser.error("--pupils is at least 1000")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        run(args)
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None


if __name__ == "__main__":
    main()
