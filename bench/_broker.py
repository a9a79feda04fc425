"""What the benchmarks that start a real broker share (not a benchmark: `make bench`
skips files starting with an underscore)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
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
