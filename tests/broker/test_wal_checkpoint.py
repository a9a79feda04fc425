"""SQLite WAL checkpoints run off the partner read path, in a background thread."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from broker.db import WalCheckpointer, is_sqlite_file, make_engine

ROW = "x" * 2000  # about half a page: each 100-row commit adds ~50 pages to the WAL
ROWS = 5000  # ~2,600 pages in all, well past SQLite's own 1,000-page threshold


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wal.db'}"


def autocheckpoint(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def write(engine: Engine, rows: int = ROWS, pause: float = 0.0) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    for _ in range(rows // 100):
        with engine.begin() as conn:  # many small commits, as the access log makes
            conn.exec_driver_sql("INSERT INTO t (v) VALUES (?)", [(ROW,)] * 100)
        time.sleep(pause)


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one())


@pytest.mark.parametrize("auto", [True, False])
def test_an_engine_can_leave_checkpoints_to_someone_else(url: str, auto: bool) -> None:
    writer = make_engine(url, auto_checkpoint=auto)
    checkpointer = WalCheckpointer(make_engine(url))
    try:
        assert autocheckpoint(writer) == (1000 if auto else 0)
        write(writer)
        busy, frames, done = checkpointer.run_once()
        assert (busy, done) == (0, frames)  # everything copied into the database now
        if auto:
            assert frames < 2000  # SQLite checkpointed along the way and reused the WAL
        else:
            assert frames > 2000  # nobody did: every commit's pages were still there
        assert count(checkpointer.engine) == ROWS
    finally:
        writer.dispose()
        checkpointer.engine.dispose()


def test_only_a_database_file_counts() -> None:
    assert is_sqlite_file(make_engine("sqlite:///somewhere/else.db"))
    assert not is_sqlite_file(make_engine("sqlite://"))
    assert not is_sqlite_file(make_engine("sqlite:///:memory:"))


async def test_the_background_task_keeps_the_wal_short(url: str, tmp_path: Path) -> None:
    writer = make_engine(url, auto_checkpoint=False)
    checkpointer = WalCheckpointer(make_engine(url), interval=0.01)
    await checkpointer.start()
    try:
        # 50 commits over about half a second: the task checkpoints every few of them.
        await asyncio.to_thread(write, writer, ROWS, 0.01)
        # The WAL file keeps the size of its largest run between checkpoints: with the
        # task running it stays far under the ~10 MB that all commits together wrote.
        wal_bytes = await asyncio.to_thread(os.path.getsize, tmp_path / "wal.db-wal")
        assert wal_bytes < 4_000_000
    finally:
        await checkpointer.stop()
        busy, frames, done = checkpointer.run_once()
        assert (busy, done) == (0, frames)  # stopping checkpointed what was left
        writer.dispose()
        checkpointer.engine.dispose()


async def test_the_task_outlives_a_failed_checkpoint(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpointer = WalCheckpointer(make_engine(url), interval=0.01)
    real = checkpointer.run_once
    calls: list[str] = []

    def flaky() -> tuple[int, int, int]:
        calls.append("call")
        if len(calls) <= 2:  # e.g. the pool timing out under load
            raise TimeoutError("QueuePool limit reached")
        return real()

    monkeypatch.setattr(checkpointer, "run_once", flaky)
    await checkpointer.start()
    try:
        for _ in range(500):
            if len(calls) >= 4:
                break
            await asyncio.sleep(0.01)
        assert len(calls) >= 4  # it went on after the failures
    finally:
        await checkpointer.stop()  # and stopping does not raise
        checkpointer.engine.dispose()


async def test_a_steady_stream_of_commits_cannot_grow_the_wal_without_end(
    url: str, tmp_path: Path
) -> None:
    """PASSIVE checkpoints alone never catch up with a writer that keeps committing (as the
    access log does under load: a batch every few milliseconds)."""
    writer = make_engine(url, auto_checkpoint=False)
    checkpointer = WalCheckpointer(make_engine(url), interval=0.005, max_wal_bytes=2_000_000)
    await checkpointer.start()
    try:
        await asyncio.to_thread(write, writer, 3 * ROWS, 0.002)  # ~30 MB of WAL frames
        wal_bytes = await asyncio.to_thread(checkpointer.wal_bytes)
        assert wal_bytes < 12_000_000
        assert count(writer) == 3 * ROWS
    finally:
        await checkpointer.stop()
        writer.dispose()
        checkpointer.engine.dispose()


async def test_stopping_waits_for_the_checkpoint_in_flight(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling `to_thread` leaves its thread running: the last checkpoint at shutdown
    then raced the one in flight and SQLite answered busy (CI saw (1, -1, -1))."""
    checkpointer = WalCheckpointer(make_engine(url), interval=0.001)
    in_flight = threading.Event()
    release = threading.Event()
    lock = threading.Lock()
    running = 0
    overlaps: list[int] = []

    def slow() -> tuple[int, int, int]:
        nonlocal running
        with lock:
            running += 1
            overlaps.append(running)
        try:
            if not in_flight.is_set():
                in_flight.set()
                release.wait(timeout=30)
            return (0, 0, 0)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(checkpointer, "run_once", slow)
    await checkpointer.start()
    await asyncio.to_thread(in_flight.wait, 30)
    stopping = asyncio.create_task(checkpointer.stop())
    for _ in range(50):  # let stop() run as far as it will before the first call ends
        await asyncio.sleep(0)
    assert not stopping.done()  # it waits for the checkpoint in flight
    release.set()
    await stopping
    assert max(overlaps) == 1  # never two checkpoints at once
    assert len(overlaps) == 2  # the one in flight, then the last one at shutdown
    checkpointer.engine.dispose()
