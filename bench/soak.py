"""Soak: mixed traffic at 80% of the capacity just measured, a Redis restart and a killed
Celery worker, then what must still be true (issue 12).

Starts the whole broker as an operator does (`misbroker up`: API, worker, beat) in a
temporary data directory, against a Redis this script owns so that it can restart it (the
one Redis the embedded deployment also uses for cache, tokens and Celery's queue).  Then:

1. warm-up, and the API's RSS;
2. capacity: partner reads, as fast as `--connections` clients go, for a few seconds;
3. `--minutes` of mixed traffic, scheduled at 80% of that rate: partner reads, agent uploads
   (deltas, one new pupil each), heartbeats, admin actions, failed logins and abusive
   requests (oversized bodies, bad credentials, `limit=` with 5,000 digits, `Basic é`).
   A third of the way in the Redis is restarted; two thirds in, a Celery pool process is
   killed (-9);
4. the checks, printed one per line: 5xx outside the restart window (and how long that
   window lasted), uploads lost (acknowledged but not served), reads without an access-log
   entry (by request id), RSS at the end against the start, the worker's recovery and
   `misbroker audit verify`.

Only loopback traffic; every loop is bounded; the run stops by itself.  The ratio printed
for RSS is against the start of the same run, never against a machine-dependent figure.

    uv run python bench/soak.py [--minutes 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson
import psutil
import pyotp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._broker import free_port

ROOT = Path(__file__).resolve().parents[1]
AREA = "students.basic"
PUPILS = 300
LOAD_FACTOR = 0.8
CAPACITY_SECONDS = 4.0
WARMUP_SECONDS = 3.0
RSS_BOUND = 1.2
OVERSIZED_BYTES = 8 * 1024 * 1024  # per abusive body: the point is the bound, not the size
REQUEST_TIMEOUT = 30.0
RATE_LIMIT_PER_MINUTE = 1_000_000_000  # the partner's limit is not what is soaked here
# Mixed traffic, by weight.
MIX = {
    "read": 70,
    "upload": 8,
    "heartbeat": 8,
    "admin": 6,
    "failed_login": 2,
    "abusive": 6,
}


@dataclass
class World:
    base_url: str
    data_dir: Path
    env: dict[str, str]
    school_id: str
    agent_key: str
    client_id: str
    client_secret: str
    admin_email: str
    admin_password: str
    totp_secret: str
    token: str = ""
    admin_token: str = ""


@dataclass
class Outcome:
    at: float  # monotonic, when the answer came
    kind: str
    status: int  # 0: no answer (connection refused, reset, timeout)
    request_id: str = ""
    pupil: str = ""  # the new pupil of an acknowledged upload
    error: str = ""  # why there was no answer
    sent: float = 0.0  # monotonic, when the request went
    retry_after: bool = False  # the answer said when to come back

    @property
    def shed(self) -> bool:
        """A login the hash gate turned away: 503 with Retry-After is what it does when every
        argon2 slot is busy (memory stays bounded), not a failure; a client comes back."""
        return self.kind == "failed_login" and self.status == 503 and self.retry_after


@dataclass
class SoakReport:
    capacity_rps: float
    target_rps: float
    sent: int
    statuses: dict[str, Counter[int]]
    errors_5xx_outside: Counter[str]  # what was sent, the status, whether it has a request id
    logins_shed: int  # 503 + Retry-After from the login hash gate: by design, counted apart
    unanswered_outside: Counter[str]  # what was sent, and the error: reset, timeout
    window_seconds: float
    uploads_acked: int
    uploads_lost: int
    reads_200: int
    reads_unlogged: int
    rss_start_mb: float
    rss_end_mb: float
    worker_respawned: bool
    worker_task_done: bool
    audit_ok: bool
    audit_line: str
    notes: list[str] = field(default_factory=list)

    @property
    def rss_ratio(self) -> float:
        return self.rss_end_mb / self.rss_start_mb

    @property
    def passed(self) -> bool:
        return (
            not self.errors_5xx_outside
            and self.uploads_lost == 0
            and self.reads_unlogged == 0
            and self.rss_ratio <= RSS_BOUND
            and self.worker_respawned
            and self.worker_task_done
            and self.audit_ok
        )

    def lines(self) -> list[str]:
        return [
            f"capacity: {self.capacity_rps:.0f} partner reads/s; mixed traffic at "
            f"{self.target_rps:.0f} req/s ({LOAD_FACTOR:.0%}), {self.sent} requests",
            "statuses: "
            + "; ".join(
                f"{kind} " + " ".join(f"{s}x{n}" for s, n in sorted(c.items()))
                for kind, c in sorted(self.statuses.items())
            ),
            f"5xx outside the restart window: {self.errors_5xx_outside.total()} (must be 0); "
            f"the window lasted {self.window_seconds:.1f} s",
            *[f"  {n} x {e}" for e, n in self.errors_5xx_outside.most_common()],
            f"failed logins shed by the hash gate (503 + Retry-After, by design when its "
            f"slots are busy): {self.logins_shed}",
            f"requests without an answer outside the window: {self.unanswered_outside.total()}",
            *[f"  {n} x {e}" for e, n in self.unanswered_outside.most_common()],
            f"uploads lost: {self.uploads_lost} of {self.uploads_acked} acknowledged (must be 0)",
            f"reads without an access-log entry: {self.reads_unlogged} of {self.reads_200} "
            "200 reads (must be 0)",
            f"API RSS: {self.rss_start_mb:.0f} MB after warm-up, {self.rss_end_mb:.0f} MB at the "
            f"end: {self.rss_ratio:.2f}x (must be <= {RSS_BOUND})",
            f"killed Celery pool process: pool back to full {self.worker_respawned}, "
            f"a task done after the kill {self.worker_task_done}",
            f"audit verify: {self.audit_line}",
            *self.notes,
            "soak: PASS" if self.passed else "soak: FAIL",
        ]


# ---------------------------------------------------------------------------------------
# The broker: our Redis, the data, `misbroker up`


@contextmanager
def redis_server(root: Path) -> Iterator[Any]:
    from broker.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(
        run_dir=root / "redis-run",
        store_dir=root / "redis-store",
        socket_path=root / "redis-run" / "redis.sock",
        maxmemory="256mb",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def prepare(data_dir: Path, redis_url: str, base_url: str) -> World:
    """Database, school, admin, partner (its rate limit raised) and consent, as the demo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}
    env |= {
        "MISBROKER_DATA_DIR": str(data_dir),
        "MISBROKER_REDIS_URL": redis_url,
        "MISBROKER_LOG_LEVEL": "WARNING",
        "MISBROKER_PUBLIC_URL": base_url,
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("MISBROKER_")})
    from broker.db import make_engine, session_scope, upgrade
    from broker.demo import DEMO_ADMIN, DEMO_PARTNER, _ensure_world
    from broker.keyring import load_key_provider
    from broker.partners.repository import PartnerRepository
    from broker.resources import Resources
    from broker.settings import load_settings

    settings = load_settings()
    load_key_provider(settings)
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    resources = Resources.build(settings)
    try:
        creds = _ensure_world(resources)
        with session_scope(resources.engine) as session:
            partner = PartnerRepository(session).by_name(DEMO_PARTNER)
            assert partner is not None
            partner.rate_limit_per_minute = RATE_LIMIT_PER_MINUTE
            session.add(partner)
    finally:
        resources.close()
    return World(
        base_url=base_url,
        data_dir=data_dir,
        env=env,
        school_id=creds.school.id,
        agent_key=creds.agent_key,
        client_id=creds.client_id,
        client_secret=creds.client_secret,
        admin_email=DEMO_ADMIN,
        admin_password=creds.admin_password,
        totp_secret=creds.totp_secret,
    )


@contextmanager
def broker_up(world: World, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(world.data_dir)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, "up", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=world.env,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"misbroker up exited at start-up: see {log}")
            try:
                if httpx.get(f"{world.base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit(f"misbroker up was not ready in 90 s: see {log}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _children(up: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(up.pid).children(recursive=True)


def api_process(up: subprocess.Popen[bytes]) -> psutil.Process:
    for proc in _children(up):
        if "broker.serve" in " ".join(proc.cmdline()):
            return proc
    raise SystemExit("no API process under misbroker up")


def worker_pool(up: subprocess.Popen[bytes]) -> tuple[psutil.Process, list[psutil.Process]]:
    """The Celery worker's main process and its pool processes."""
    for proc in _children(up):
        cmd = proc.cmdline()
        if "celery" in " ".join(cmd) and "worker" in cmd:
            return proc, proc.children()
    raise SystemExit("no Celery worker under misbroker up")


def rss_mb(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / 2**20


# ---------------------------------------------------------------------------------------
# Requests


def upload_body(n: int, now: datetime) -> dict[str, Any]:
    return {
        "batch_id": str(uuid.uuid4()),
        "area": AREA,
        "mode": "delta",
        "extracted_at": now.isoformat().replace("+00:00", "Z"),
        "records": [
            {"id": f"soak-{n}", "forename": "Soak", "surname": f"Pupil{n}", "on_roll": True}
        ],
        "deleted": [],
    }


ABUSES = ("oversized_unauthenticated", "bad_token", "limit_digits", "basic_non_ascii", "garbage")


async def send(client: httpx.AsyncClient, world: World, kind: str, n: int) -> Outcome:
    """One request of the mix; `n` numbers it (a new pupil per upload, the abuse in turn)."""
    read_url = f"/v1/schools/{world.school_id}/data/{AREA}"
    partner = {"Authorization": f"Bearer {world.token}"}
    agent = {"Authorization": f"Bearer {world.agent_key}"}
    admin = {"Authorization": f"Bearer {world.admin_token}"}
    pupil = ""
    if kind == "read":
        request = client.build_request("GET", read_url, params={"limit": 50}, headers=partner)
    elif kind == "upload":
        pupil = f"soak-{n}"
        body = orjson.dumps(upload_body(n, datetime.now(UTC)))
        json_agent = {**agent, "Content-Type": "application/json"}
        request = client.build_request(
            "POST", "/v1/agent/uploads", content=body, headers=json_agent
        )
    elif kind == "heartbeat":
        request = client.build_request("POST", "/v1/agent/heartbeat", json={}, headers=agent)
    elif kind == "admin":
        path = ("/v1/admin/consents", "/v1/admin/access-log", "/v1/admin/agent")[n % 3]
        request = client.build_request("GET", path, headers=admin)
    elif kind == "failed_login":
        login = {"email": f"nobody{n}@soak.example", "password": "wrong-password", "totp": "000000"}
        request = client.build_request("POST", "/v1/admin/login", json=login)
    else:
        kind = f"abusive:{ABUSES[n % len(ABUSES)]}"
        request = abusive(client, world, n)
    sent = time.monotonic()
    try:
        response = await client.send(request)
    except httpx.HTTPError as exc:
        return Outcome(time.monotonic(), kind, 0, error=type(exc).__name__, sent=sent)
    rid = response.headers.get("x-request-id", "")
    retry_after = "retry-after" in response.headers
    return Outcome(
        time.monotonic(), kind, response.status_code, rid, pupil, sent=sent,
        retry_after=retry_after,
    )  # fmt: skip


def abusive(client: httpx.AsyncClient, world: World, n: int) -> httpx.Request:
    abuse = ABUSES[n % len(ABUSES)]
    read_url = f"/v1/schools/{world.school_id}/data/{AREA}"
    if abuse == "oversized_unauthenticated":
        body = b"[" + b"1," * (OVERSIZED_BYTES // 2) + b"1]"
        return client.build_request(
            "POST",
            "/v1/agent/heartbeat",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    if abuse == "bad_token":
        return client.build_request("GET", read_url, headers={"Authorization": "Bearer mbt_x"})
    if abuse == "limit_digits":
        partner = {"Authorization": f"Bearer {world.token}"}
        return client.build_request("GET", read_url, params={"limit": "9" * 5000}, headers=partner)
    if abuse == "basic_non_ascii":
        return client.build_request(
            "POST",
            "/oauth/token",
            content=b"grant_type=client_credentials",
            headers={
                b"Content-Type": b"application/x-www-form-urlencoded",
                b"Authorization": "Basic é".encode("latin-1"),
            },
        )
    return client.build_request(
        "POST",
        "/v1/agent/uploads",
        content=os.urandom(2048),
        headers={"Authorization": f"Bearer {world.agent_key}", "Content-Encoding": "gzip"},
    )


async def capacity(world: World, connections: int, seconds: float) -> float:
    """Partner reads per second, closed loop, `connections` clients."""
    count = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections)

    async with httpx.AsyncClient(
        base_url=world.base_url, timeout=REQUEST_TIMEOUT, limits=limits
    ) as client:

        async def loop() -> None:
            nonlocal count
            while time.monotonic() < deadline:
                if (await send(client, world, "read", 0)).status == 200:
                    count += 1

        start = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(connections)))
        return count / (time.monotonic() - start)


@dataclass
class Faults:
    """When the Redis restart began and ended, and when the worker was killed."""

    redis_down: float = 0.0
    redis_up: float = 0.0
    worker_killed: float = 0.0
    killed_pid: int = 0


async def mixed(
    world: World,
    rate: float,
    seconds: float,
    connections: int,
    faults: Any,
) -> list[Outcome]:
    """Open loop at `rate`: each request starts on its schedule, with at most
    `connections` in flight (a late start waits, it is never dropped)."""
    rng = random.Random(2026)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=int(rate * seconds))
    limit = asyncio.Semaphore(connections)
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(
        base_url=world.base_url, timeout=REQUEST_TIMEOUT, limits=limits
    ) as client:

        async def one(kind: str, n: int) -> None:
            try:
                outcomes.append(await send(client, world, kind, n))
            finally:
                limit.release()

        start = time.monotonic()
        tasks = []
        fault_task = asyncio.create_task(faults(start, seconds))
        for n, kind in enumerate(kinds):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await limit.acquire()
            tasks.append(asyncio.create_task(one(kind, n)))
        await asyncio.gather(*tasks)
        await fault_task
    return outcomes


# ---------------------------------------------------------------------------------------
# The checks


def served_pupils(world: World) -> set[str]:
    """Every students.basic id a partner is served now, page by page."""
    ids: set[str] = set()
    url = f"{world.base_url}/v1/schools/{world.school_id}/data/{AREA}"
    params: dict[str, Any] = {"limit": 500}
    with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
        for _ in range(1000):
            response = client.get(
                url, params=params, headers={"Authorization": f"Bearer {world.token}"}
            )
            if response.status_code != 200:
                raise SystemExit(f"reading back: {response.status_code} {response.text[:300]}")
            page = orjson.loads(response.content)
            ids |= {record["id"] for record in page["data"]}
            cursor = page["meta"].get("next_cursor")
            if not cursor:
                return ids
            params["cursor"] = cursor
    raise SystemExit("reading back: more than 1,000 pages")


def logged_request_ids(world: World) -> set[str]:
    from sqlmodel import Session, col, select

    from broker.db import make_engine
    from consent.models import AccessLogRow

    engine = make_engine(f"sqlite:///{world.data_dir.resolve() / 'misbroker.db'}")
    try:
        with Session(engine) as session:
            rows = select(AccessLogRow.request_id).where(
                col(AccessLogRow.school_id) == world.school_id
            )
            return set(session.exec(rows).all())
    finally:
        engine.dispose()


def audit_verify(world: World) -> tuple[bool, str]:
    argv = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(world.data_dir)]
    result = subprocess.run(
        [*argv, "audit", "verify", world.school_id],
        capture_output=True,
        env=world.env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    text = (result.stdout or result.stderr).decode().strip().splitlines()
    return result.returncode == 0, (text[0] if text else f"exit {result.returncode}")


def restart_window(outcomes: list[Outcome], faults: Faults) -> tuple[float, float]:
    """From the Redis going down to the first 200 read once it is back."""
    back = [
        o.at for o in outcomes if o.kind == "read" and o.status == 200 and o.at > faults.redis_up
    ]
    return faults.redis_down, min(back, default=faults.redis_up)


# ---------------------------------------------------------------------------------------
# The run


def sign_in(world: World) -> None:
    with httpx.Client(base_url=world.base_url, timeout=REQUEST_TIMEOUT) as client:
        token = client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(world.client_id, world.client_secret),
        )
        if token.status_code != 200:
            raise SystemExit(f"token: {token.status_code} {token.text[:300]}")
        world.token = token.json()["access_token"]
        code = pyotp.TOTP(world.totp_secret).now()
        login = client.post(
            "/v1/admin/login",
            json={"email": world.admin_email, "password": world.admin_password, "totp": code},
        )
        if login.status_code != 200:
            raise SystemExit(f"admin login: {login.status_code} {login.text[:300]}")
        world.admin_token = login.json()["token"]


def upload_school(world: World) -> None:
    from agents.mis.synthetic import SyntheticMis
    from broker.demo import upload_full

    now = datetime.now(UTC)
    mis = SyntheticMis(seed=2026, pupils=PUPILS, phase="secondary", day=now.date())
    with httpx.Client(base_url=world.base_url, timeout=120) as client:
        upload_full(client, world.agent_key, AREA, list(mis.extract(AREA)), now)


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def worker_task_runs(world: World) -> bool:
    """A task sent now is done by a worker: the heartbeat task writes its key again.

    Sent through the broker's own queue, named explicitly: this process's Celery app was
    configured from this process's environment, not the soak's deployment.
    """
    import redis

    from broker.settings import load_settings
    from broker.worker import HEARTBEAT_KEY, celery_app

    with mock.patch.dict(os.environ, world.env):
        queue_url = load_settings().celery_broker_url
    client = redis.Redis.from_url(world.env["MISBROKER_REDIS_URL"])
    try:
        client.delete(HEARTBEAT_KEY)
        with celery_app.connection_for_write(queue_url) as connection:
            celery_app.send_task("broker.heartbeat", connection=connection)
        return wait_for(lambda: client.get(HEARTBEAT_KEY) is not None, 60)
    finally:
        client.close()


def soak(minutes: float, connections: int, keep: bool = False) -> SoakReport:
    root = Path(tempfile.mkdtemp(prefix="mb-soak-"))
    port = free_port()
    try:
        with redis_server(root) as redis_srv:
            world = prepare(root / "data", redis_srv.url, f"http://127.0.0.1:{port}")
            with broker_up(world, port, root / "up.log") as up:
                return _soak(world, up, redis_srv, minutes, connections)
    finally:
        if keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _soak(
    world: World, up: subprocess.Popen[bytes], redis_srv: Any, minutes: float, connections: int
) -> SoakReport:
    upload_school(world)
    sign_in(world)
    api = api_process(up)
    asyncio.run(capacity(world, connections, WARMUP_SECONDS))
    rss_start = rss_mb(api)
    rps = asyncio.run(capacity(world, connections, CAPACITY_SECONDS))
    rate = max(1.0, rps * LOAD_FACTOR)
    faults = Faults()
    _, pool_before = worker_pool(up)

    async def inject(start: float, seconds: float) -> None:
        await asyncio.sleep(max(0.0, start + seconds / 3 - time.monotonic()))
        faults.redis_down = time.monotonic()
        await asyncio.to_thread(redis_srv.stop)
        # In this (the main) thread: a child dies with the thread that started it
        # (PR_SET_PDEATHSIG), and to_thread's workers end with the event loop.
        redis_srv.start()
        faults.redis_up = time.monotonic()
        await asyncio.sleep(max(0.0, start + 2 * seconds / 3 - time.monotonic()))
        _, pool = worker_pool(up)
        if pool:
            faults.killed_pid = pool[0].pid
            pool[0].kill()
            faults.worker_killed = time.monotonic()

    outcomes = asyncio.run(mixed(world, rate, minutes * 60, connections, inject))
    statuses: dict[str, Counter[int]] = {}
    for o in outcomes:
        statuses.setdefault(o.kind, Counter())[o.status] += 1
    start, end = restart_window(outcomes, faults)
    # A request that was in flight at any moment of the window is in it: one sent while the
    # Redis was down may be answered after the first good read once it is back.
    outside = [o for o in outcomes if o.at < start or o.sent > end]
    errors = Counter(
        f"{o.kind} {o.status} (X-Request-Id: {'yes' if o.request_id else 'none'})"
        for o in outside
        if o.status >= 500 and not o.shed
    )
    respawned = wait_for(
        lambda: (
            len(worker_pool(up)[1]) >= len(pool_before)
            and faults.killed_pid not in {p.pid for p in worker_pool(up)[1]}
        ),
        30,
    )
    task_done = worker_task_runs(world)
    time.sleep(2)  # reads still being logged
    rss_end = rss_mb(api)
    acked = {o.pupil for o in outcomes if o.kind == "upload" and o.status == 200}
    reads = {o.request_id for o in outcomes if o.kind == "read" and o.status == 200}
    unlogged = reads - logged_request_ids(world)
    lost = acked - served_pupils(world)
    audit_ok, audit_line = audit_verify(world)
    notes = [] if up.poll() is None else [f"misbroker up exited with {up.returncode}"]
    return SoakReport(
        capacity_rps=rps,
        target_rps=rate,
        sent=len(outcomes),
        statuses=statuses,
        errors_5xx_outside=errors,
        logins_shed=sum(o.shed for o in outside),
        unanswered_outside=Counter(f"{o.kind} {o.error}" for o in outside if o.status == 0),
        window_seconds=end - start,
        uploads_acked=len(acked),
        uploads_lost=len(lost),
        reads_200=len(reads),
        reads_unlogged=len(unlogged),
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        worker_respawned=respawned,
        worker_task_done=task_done,
        audit_ok=audit_ok,
        audit_line=audit_line,
        notes=notes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args()
    report = soak(args.minutes, args.connections, keep=args.keep)
    for line in report.lines():
        print(line)
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
