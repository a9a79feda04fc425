"""Child processes that never outlive the broker: own session, and killed if we die."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
KILL_WAIT_SECONDS = 5.0  # how long `stop` waits for a SIGKILLed child to be reaped


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the supervisor is killed -9 the kernel sends SIGTERM to the child: nothing is left.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group, so Ctrl-C reaches only the supervisor."""
    stdout = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115
    try:
        return subprocess.Popen(  # noqa: S603 - argv is built by us, never from input
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - nothing else runs threads yet
        )
    finally:
        if stdout is not None:
            stdout.close()


def stop(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM the child's whole group, then SIGKILL whatever is left after `timeout`.

    True when the child itself stopped on SIGTERM; False when it had to be killed.
    """
    stopped = True
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stopped = False
    # The leader may be gone while its own children (e.g. a Celery pool) linger.
    _signal_group(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        # A process stuck in the kernel (uninterruptible I/O) outlives even SIGKILL for a
        # while: stopping the rest (Redis above all) matters more than waiting for it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_WAIT_SECONDS)
    return stopped


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
