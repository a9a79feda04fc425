"""`misbroker up` as an operator runs it: a real process tree, stopped with signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
import redis

from broker.cli.up import SHUTDOWN_BOUND_SECONDS
from broker.worker import HEARTBEAT_KEY
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}
    env.update(extra)
    return env


def _up_argv(data_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "broker.cli.main",
        "--data-dir",
        str(data_dir),
        "up",
        "--port",
        str(port),
        *extra,
    ]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _listening(port: int) -> bool:
    return any(
        c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
        for c in psutil.net_connections("tcp")
    )


@contextmanager
def running_up(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    data_dir, port = tmp_path / "data", free_port()
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        _up_argv(data_dir, port, *extra), stdout=log, stderr=subprocess.STDOUT, env=_env()
    )
    try:
        assert wait_until(lambda: _ready(port) or proc.poll() is not None, 90), "not ready in 90 s"
        assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
        yield proc, port, data_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        log.close()


# `up` bounds its own stop (every child killed at its timeout, at worst); the slack is for
# its own exit.
STOP_WAIT_SECONDS = SHUTDOWN_BOUND_SECONDS + 30


def _stops(
    proc: subprocess.Popen[bytes], tmp_path: Path, timeout: float = STOP_WAIT_SECONDS
) -> int:
    """`proc`'s exit code once it has stopped; what it logged if it has not within `timeout`."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout:.0f}s:\n" + _log_tail(tmp_path))


def _log_tail(tmp_path: Path) -> str:
    return (tmp_path / "up.log").read_text(errors="replace")[-4000:]


def _tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _all_gone(procs: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)


def test_up_is_ready_refuses_a_second_up_and_stops_clean_on_ctrl_c(tmp_path: Path) -> None:
    with running_up(tmp_path) as (proc, port, data_dir):
        tree = _tree(proc.pid)
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        for part in ("broker.serve", "worker", "beat", "valkey-server"):
            assert part in names
        second = subprocess.run(
            _up_argv(data_dir, free_port()),
            check=False,
            capture_output=True,
            env=_env(),
            timeout=60,
        )
        assert second.returncode == 1
        err = second.stderr.decode().strip().splitlines()
        assert len(err) == 1
        assert "already running" in err[0]
        assert f"pid {proc.pid}" in err[0]

        # Beat schedules and the worker runs: the heartbeat task leaves its mark in Redis.
        client = redis.Redis(unix_socket_path=str(data_dir / "run" / "redis.sock"))
        assert wait_until(lambda: client.get(HEARTBEAT_KEY) is not None, 60)
        client.close()

        proc.send_signal(signal.SIGINT)
        assert _stops(proc, tmp_path) == 0, _log_tail(tmp_path)
        assert wait_until(lambda: _all_gone(tree), 15), [
            p.cmdline() for p in tree if p.is_running()
        ]
        assert not _listening(port)
        assert not (data_dir / "run" / "redis.sock").exists()
        log = (tmp_path / "up.log").read_text()
        assert "misbroker is up at" in log
        # Piped, the processes log JSON lines (a terminal gets human ones: test_up_console).
        records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert {r["process"] for r in records} >= {"api", "worker"}, log[-3000:]
        assert not re.search(r"^\d\d:\d\d:\d\d (api|worker|beat) ", log, re.MULTILINE)
        assert "celery@" not in log  # no banner


def test_sigterm_stops_everything(tmp_path: Path) -> None:
    with running_up(tmp_path) as (proc, port, _):
        tree = _tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert _stops(proc, tmp_path) == 0, _log_tail(tmp_path)
        assert wait_until(lambda: _all_gone(tree), 15)
        assert not _listening(port)


def test_a_killed_supervisor_takes_its_children_with_it(tmp_path: Path) -> None:
    with running_up(tmp_path) as (proc, port, _):
        tree = _tree(proc.pid)
        proc.kill()
        proc.wait(10)
        assert wait_until(lambda: _all_gone(tree), 30), [
            p.cmdline() for p in tree if p.is_running()
        ]
        assert not _listening(port)
    # ... and the data directory is usable again at once.
    with running_up(tmp_path) as (again, _, _):
        again.send_signal(signal.SIGTERM)
        assert _stops(again, tmp_path) == 0, _log_tail(tmp_path)


def test_unreachable_redis_url_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        _up_argv(tmp_path / "data", free_port()),
        check=False,
        capture_output=True,
        env=_env(MISBROKER_REDIS_URL=url),
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "unreachable" in lines[0]
    assert not (tmp_path / "data" / "misbroker.db").exists()


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with psutil_listener() as port:
        result = subprocess.run(
            _up_argv(tmp_path / "data", port),
            check=False,
            capture_output=True,
            env=_env(),
            timeout=60,
        )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert f"{port}" in lines[0]


@contextmanager
def psutil_listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _loose(data_dir: Path) -> list[str]:
    """Paths in the data dir that another local user could read."""
    return [
        f"{p} {oct(p.stat().st_mode & 0o777)}"
        for p in [data_dir, *data_dir.rglob("*")]
        if not p.is_symlink() and p.stat().st_mode & 0o077
    ]


def test_up_keeps_the_data_dir_owner_only_and_repairs_it_with_a_warning(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "run").mkdir(parents=True)
    data_dir.chmod(0o755)
    (data_dir / "run").chmod(0o755)
    stray = data_dir / "run" / "left-by-an-old-version"
    stray.write_text("x")
    stray.chmod(0o644)
    with running_up(tmp_path) as (proc, _port, _data_dir):
        created = [data_dir / "misbroker.db", data_dir / "misbroker.db-wal"]
        assert all(p.exists() for p in created)
        assert list((data_dir / "redis").rglob("*.aof")), "no append-only file yet"
        assert _loose(data_dir) == []
        assert oct(data_dir.stat().st_mode & 0o777) == "0o700"
        assert oct(stray.stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGINT)
        assert _stops(proc, tmp_path) == 0, _log_tail(tmp_path)
    log = (tmp_path / "up.log").read_text()
    assert "warning: 3 path(s)" in log
    assert _loose(data_dir) == []
