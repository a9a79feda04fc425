"""What the benchmarks that start a real broker share (not a benchmark: `make bench`
skips files starting with an underscore)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def broker_env(data_dir: Path, redis_url: str, environment: str) -> dict[str, str]:
    """This process's environment without any MISBROKER_ setting, plus the broker's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}
    env.update(
        MISBROKER_DATA_DIR=str(data_dir),
        MISBROKER_REDIS_URL=redis_url,
        MISBROKER_ENVIRONMENT=environment,
        MISBROKER_LOG_LEVEL="WARNING",
    )
    return env


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Until `url` answers 200; exits the bench if the server dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited at start-up: see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} was not ready within {timeout:.0f} s: see {log}")


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


@dataclass
class Database:
    """The broker's database for a bench: SQLite in its data directory, or a throwaway
    PostgreSQL server (as the tests start one) with its server processes for CPU figures."""

    kind: str  # "sqlite" or "postgresql"
    url: str | None  # None: the broker's default SQLite file in its data directory
    server: psutil.Process | None = None  # the postmaster

    def env(self) -> dict[str, str]:
        return {} if self.url is None else {"MISBROKER_DATABASE_URL": self.url}

    def processes(self) -> list[psutil.Process]:
        """The server and its backends now (backends of a pooled engine live on)."""
        if self.server is None:
            return []
        return [self.server, *self.server.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """The server's CPU so far: its live processes' own, and what the postmaster has
        reaped of its children.  A process that exits (an autovacuum worker, a backend)
        moves its CPU from the one to the other, so it is neither lost nor subtracted
        between two readings; counting live processes alone, it was, and a delta's figure
        wandered by a third from run to run.  Read again if one exited while being read."""
        if self.server is None:
            return 0.0
        for _ in range(10):
            reaped = self._reaped()
            live = 0.0
            for proc in self.processes():
                with contextlib.suppress(psutil.NoSuchProcess):
                    live += cpu_seconds(proc)
            if self._reaped() == reaped:
                return reaped + live
        raise RuntimeError("PostgreSQL's processes kept exiting while their CPU was read")

    def _reaped(self) -> float:
        assert self.server is not None
        times = self.server.cpu_times()
        return float(times.children_user + times.children_system)

    def describe(self) -> str:
        if self.url is None:
            return "SQLite (WAL, a file in the data directory)"
        return "PostgreSQL 15 (throwaway server on loopback TCP, fsync off as in the tests)"


@contextmanager
def database(kind: str) -> Iterator[Database]:
    if kind == "sqlite":
        yield Database(kind, None)
        return
    # The same throwaway server the tests use (scripts/ensure-postgres installs it).
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.support.servers import postgres_server

    with postgres_server() as server_url:
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text('CREATE DATABASE "bench"'))
                backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
                postmaster = psutil.Process(backend).parent()
        finally:
            admin.dispose()
        assert postmaster is not None
        url = make_url(server_url).set(database="bench").render_as_string(hide_password=False)
        yield Database(kind, url, postmaster)
