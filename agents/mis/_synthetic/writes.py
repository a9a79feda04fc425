"""What the synthetic MIS has applied of partners' writes: a small SQLite store of its own.

A real MIS keeps what it was given; so does this one, in `store` (a file when the agent
runs it, in memory otherwise), keyed by each record's idempotency key, so applying a key
twice changes nothing and answers the same MIS id.  Its extracts overlay what it applied.

`MISBROKER_SYNTHETIC_CRASH_AFTER_WRITES=N` makes the process kill itself (SIGKILL) right
after its Nth record is durable and before the agent hears of it: the exact point a crash
is most harmful, for the tests of exactly-once application.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson

from agents.mis.base import Record, WriteOutcome, WriteRecord

WRITABLE: Final = frozenset({"attendance.marks", "behaviour"})
CRASH_ENV: Final = "MISBROKER_SYNTHETIC_CRASH_AFTER_WRITES"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS applied (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE, area TEXT NOT NULL, mis_id TEXT NOT NULL, record TEXT NOT NULL
);
"""


class WriteStore:
    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path is not None else ":memory:", check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        crash = os.environ.get(CRASH_ENV, "")
        self._crash_after = int(crash) if crash.isdigit() and int(crash) > 0 else None
        self._applied_here = 0

    def apply(self, area: str, records: list[WriteRecord]) -> Iterator[WriteOutcome]:
        for item in records:
            found = self._db.execute(
                "SELECT mis_id FROM applied WHERE key = ?", (item.key,)
            ).fetchone()
            if found is not None:  # applied before a crash: the same answer, nothing new
                yield WriteOutcome(item.index, "applied", str(found[0]))
                continue
            with self._db:
                seq = self._next_seq()
                mis_id = _mis_id(area, item.record, seq)
                self._db.execute(
                    "INSERT INTO applied (key, area, mis_id, record) VALUES (?, ?, ?, ?)",
                    (item.key, area, mis_id, orjson.dumps(item.record).decode()),
                )
            self._applied_here += 1
            if self._crash_after is not None and self._applied_here >= self._crash_after:
                os.kill(os.getpid(), signal.SIGKILL)
            yield WriteOutcome(item.index, "applied", mis_id)

    def _next_seq(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM applied").fetchone()
        return int(row[0])

    def overlay(self, area: str, rendered: list[Record]) -> list[Record]:
        """The rendered records with what was applied laid over them (same id: replaced)."""
        rows = self._db.execute(
            "SELECT mis_id, record FROM applied WHERE area = ? ORDER BY seq", (area,)
        ).fetchall()
        if not rows:
            return rendered
        by_id: dict[str, Record] = {r["id"]: r for r in rendered}
        for mis_id, text in rows:
            written: dict[str, Any] = orjson.loads(text)
            by_id[mis_id] = {**by_id.get(mis_id, {}), **written, "id": mis_id}
        return list(by_id.values())

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM applied").fetchone()[0])


def _mis_id(area: str, record: Record, seq: int) -> str:
    """A session mark is one per pupil, day and session (a new one replaces the old, as in a
    real register); a behaviour event is always new."""
    if area == "attendance.marks":
        pupil = str(record["student_id"]).removeprefix("stu-")
        day = str(record["date"]).replace("-", "")
        return f"att-{pupil}-{day}-{str(record['session']).lower()}"
    return f"beh-wb-{seq:06d}"
