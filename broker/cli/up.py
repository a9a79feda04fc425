"""`misbroker up`: the whole broker in the foreground, and nothing left behind after it.

Order matters both ways.  Start: lock the data directory, Redis, migrations, then API,
worker and beat.  Stop (Ctrl-C, SIGTERM or any child dying): API first so no new work is
accepted, then beat and the worker together (it finishes or returns its tasks), then Redis.
Every child runs in its own process group and is killed by the kernel if we are killed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx
import redis

from broker.cli.context import CliError, redacted
from broker.db import make_engine, upgrade
from broker.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from broker.keyring import load_key_provider
from broker.processes import KILL_WAIT_SECONDS, spawn, stop
from broker.settings import Settings, SettingsError
from broker.tls import configured_context

READY_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUTS = {"api": 10.0, "beat": 5.0, "worker": 20.0}
SHUTDOWN_STEPS = (("api",), ("beat", "worker"))
REDIS_STOP_TIMEOUT = 10.0
# What a stop after SIGTERM can take at worst: each step's longest timeout, then the SIGKILL
# wait (KILL_WAIT_SECONDS) for each step and for Redis.
SHUTDOWN_BOUND_SECONDS = (
    sum(max(STOP_TIMEOUTS[name] for name in step) + KILL_WAIT_SECONDS for step in SHUTDOWN_STEPS)
    + REDIS_STOP_TIMEOUT
    + KILL_WAIT_SECONDS
)


class AlreadyRunningError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


@dataclass
class DataDirLock:
    """An exclusive lock on the data directory, held for as long as `up` runs."""

    path: Path
    _fh: IO[str] | None = field(default=None, repr=False)

    def acquire(self, description: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lifetime of `up`
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise AlreadyRunningError(
                f"misbroker is already running with data dir {self.path.parent.parent} "
                f"({holder}); stop it first or use another --data-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(description)
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}; use --port") from None


def _check_external_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise CliError(f"Redis at {redacted(url)} is unreachable: {exc}") from None
    finally:
        client.close()


class Supervisor:
    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.redis: EmbeddedRedis | None = None
        self.state_redis: EmbeddedRedis | None = None
        self.stopping = threading.Event()
        self.reason = ""
        self.tls = settings.broker.serves_tls

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):  # noqa: S104 - reporting the bind, not binding
            host = "127.0.0.1"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def probe_tls(self) -> ssl.SSLContext | bool:
        """How the readiness probe talks to our own API child on this machine.

        The certificate names the public host, not the bind address, and may come from a
        private CA: the probe reads only `/readyz` of the process we started, so it checks
        that TLS answers without judging the name or the chain.
        """
        if not self.tls:
            return True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MISBROKER_DATA_DIR"] = str(self.settings.data_dir)
        env["MISBROKER_HOST"] = self.host
        env["MISBROKER_PORT"] = str(self.port)
        env.setdefault("MISBROKER_PUBLIC_URL", self.base_url)
        return env

    def prepare(self) -> None:
        s = self.settings
        if s.embedded_redis:
            self.redis = EmbeddedRedis(
                run_dir=s.run_dir,
                store_dir=s.data_dir / "redis",
                socket_path=s.embedded_redis_socket,
                maxmemory=s.broker.embedded_redis_maxmemory,
                policy="allkeys-lru",
            )
            self.state_redis = EmbeddedRedis(
                run_dir=s.run_dir,
                store_dir=s.data_dir / "redis-state",
                socket_path=s.embedded_state_redis_socket,
                maxmemory=s.broker.embedded_state_redis_maxmemory,
                policy="noeviction",
                name="state-redis",
            )
            try:
                self.redis.start()
                self.state_redis.start()
            except EmbeddedRedisError as exc:
                raise CliError(str(exc), exit_code=1) from None
        else:
            _check_external_redis(s.redis_url)
            if s.state_redis_url != s.redis_url:
                _check_external_redis(s.state_redis_url)
        load_key_provider(s)  # development creates the key file once, before any child
        engine = make_engine(s.database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        if s.cache.blob_location is None:
            s.blob_dir.mkdir(parents=True, exist_ok=True)

    def start_children(self) -> None:
        py, s, env = sys.executable, self.settings, self._env()
        level = s.broker.log_level.upper()
        # `--quiet`: no banner; the lines that matter come through our logging.
        celery = [py, "-m", "celery", "-A", "broker.worker", "--quiet"]
        self.children["api"] = spawn(
            [py, "-m", "broker.serve", "--host", self.host, "--port", str(self.port)], env=env
        )
        self.children["worker"] = spawn(
            [
                *celery,
                "worker",
                "--loglevel",
                level,
                "--concurrency",
                str(s.broker.worker_concurrency),
                "--hostname",
                f"worker-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
        )
        self.children["beat"] = spawn(
            [
                *celery,
                "beat",
                "--loglevel",
                level,
                "--schedule",
                str(s.run_dir / "celerybeat-schedule"),
                "--pidfile=",
            ],
            env=env,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with httpx.Client(timeout=2.0, verify=self.probe_tls()) as client:
            while time.monotonic() < deadline and not self.stopping.is_set():
                self._check_children()
                try:
                    if client.get(f"{self.base_url}/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        if not self.stopping.is_set():
            raise CliError(f"the API was not ready within {READY_TIMEOUT_SECONDS:.0f}s", 1)

    def _check_children(self) -> None:
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                raise CliError(f"the {name} process exited unexpectedly (code {code})", 1)

    def supervise(self) -> None:
        while not self.stopping.wait(0.2):
            self._check_children()

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.reason = signal.Signals(signum).name
        self.stopping.set()

    def shutdown(self) -> None:
        # The API first: nothing new is accepted.  Then beat and the worker together: a task
        # beat sends meanwhile waits in the state Redis for the next start.  Redis last, once
        # nothing writes to it.  Each step stops its processes in parallel, so the worst case
        # (every child killed at its timeout) is SHUTDOWN_BOUND_SECONDS, not the sum.
        try:
            for step in SHUTDOWN_STEPS:
                timeouts = {name: STOP_TIMEOUTS[name] for name in step if name in self.children}
                _stop_together(timeouts, self._stop_child)
        finally:
            servers = {s.name: s for s in (self.state_redis, self.redis) if s is not None}
            timeouts = dict.fromkeys(servers, REDIS_STOP_TIMEOUT)
            _stop_together(timeouts, lambda name, timeout: servers[name].stop(timeout))

    def _stop_child(self, name: str, timeout: float) -> bool:
        return stop(self.children.pop(name), timeout)


def _stop_together(timeouts: dict[str, float], stop_one: Callable[[str, float], bool]) -> None:
    """`stop_one(name, timeout)` for every name at once (True: it stopped on SIGTERM); a
    warning names each process that had to be killed."""
    with ThreadPoolExecutor(max_workers=max(1, len(timeouts))) as pool:
        stopped = list(pool.map(stop_one, timeouts, timeouts.values()))
    for (name, timeout), ok in zip(timeouts.items(), stopped, strict=True):
        if not ok:
            _warn(f"the {name} process did not stop within {timeout:g}s of SIGTERM; killed")


def _say(message: str) -> None:
    sys.stdout.write(message.rstrip("\n") + "\n")
    sys.stdout.flush()


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def secure_data_dir(data_dir: Path) -> list[Path]:
    """Make the data directory 0700 and everything in it owner-only; the paths repaired.

    It holds admin emails, password hashes, the access log and the Redis files: no other
    local user may read them.  Directories become 0700 and regular files 0600 (sockets are
    created 0700 by Redis; symlinks are left alone).
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    repaired = []
    for path in [data_dir, *data_dir.rglob("*")]:
        if path.is_symlink():
            continue
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            wanted = 0o700
        elif stat.S_ISREG(st.st_mode):
            wanted = stat.S_IMODE(st.st_mode) & 0o700 or 0o600
        else:
            continue
        if stat.S_IMODE(st.st_mode) != wanted and stat.S_IMODE(st.st_mode) & 0o077:
            path.chmod(wanted)
            repaired.append(path)
    return repaired


def run_up(settings: Settings, *, host: str | None, port: int | None, demo: bool) -> int:
    # Everything `up` and its children create (database, WAL, Redis files, run/*) is
    # owner-only from the start; what an older version left readable is repaired below.
    os.umask(0o077)
    repaired = secure_data_dir(settings.data_dir)
    if repaired:
        sys.stderr.write(
            f"warning: {len(repaired)} path(s) in {settings.data_dir} were readable by other "
            f"users; now owner-only (e.g. {repaired[0]})\n"
        )
    host = host or settings.broker.host
    port = port or settings.broker.port
    try:
        configured_context(settings.broker)  # bad certificate or key: one line, nothing started
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    sup = Supervisor(settings, host, port)
    lock = DataDirLock(settings.run_dir / "up.lock")
    lock.acquire(f"pid {os.getpid()}, {sup.base_url}")
    previous = {
        sig: signal.signal(sig, sup.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        _check_port_free(host, port)
        sup.prepare()
        sup.start_children()
        sup.wait_ready()
        if sup.stopping.is_set():
            return 0
        _say(
            f"misbroker is up at {sup.base_url} (data dir {settings.data_dir})\n"
            f"  readiness {sup.base_url}/readyz   API docs {sup.base_url}/docs\n"
            + (
                "  TLS 1.3 (1.2 at least) with the certificate in MISBROKER_TLS_CERT_FILE\n"
                if sup.tls
                else ""
            )
            + "  Ctrl-C stops everything."
        )
        if demo:
            from broker.demo import run_demo

            _say(run_demo(settings, sup.base_url, verify=sup.probe_tls()))
        sup.supervise()
        _say(f"stopping ({sup.reason or 'requested'}) ...")
        return 0
    finally:
        sup.shutdown()
        lock.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
