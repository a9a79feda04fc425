"""The agent's local state: record hashes, per-area status, the outbox and commands done.

One SQLite file in the state directory, in WAL mode with `synchronous=FULL`, so a commit
is on disk before the agent goes on.  The one rule that makes kill -9 safe: the batches of
an upload enter the outbox in the same transaction that records their hashes (`spool`),
and each leaves it only once the broker has confirmed it (`confirm`).  A crash before the
commit leaves neither, and the next run computes the same delta again; a crash after
leaves both, and the next run sends the batches still spooled, which the broker applies at
most once each (their `batch_id`).  A batch the broker finds too large is replaced by its
pieces in one transaction too (`replace`).
"""

from __future__ import annotations

import gzip
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from agents.diff import HASH_BYTES

DB_FILE: Final = "agent.db"
# A table added with CREATE TABLE IF NOT EXISTS (held_deletions) needs no new version.
# 3: record hashes are packed one row per area (`area_hashes`), not one row per record.
SCHEMA_VERSION: Final = 3
# The broker's own upload limit, as its last 413 stated it (`limit_bytes`).
UPLOAD_LIMIT_KEY: Final = "broker_upload_limit_bytes"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS area_hashes (
    area TEXT PRIMARY KEY, ids BLOB NOT NULL, hashes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS area_state (
    area TEXT PRIMARY KEY,
    last_full_at TEXT, last_extracted_at TEXT, last_ok INTEGER, last_error TEXT,
    last_records INTEGER, last_duration REAL, last_confirmed_at TEXT, last_attempt_at TEXT,
    needs_full INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE, area TEXT NOT NULL, mode TEXT NOT NULL,
    created_at TEXT NOT NULL, extracted_at TEXT NOT NULL,
    records INTEGER NOT NULL, deleted INTEGER NOT NULL, body_gz BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT, last_error TEXT,
    retired_gz BLOB
);
CREATE TABLE IF NOT EXISTS dead_letters (
    batch_id TEXT PRIMARY KEY, area TEXT NOT NULL, mode TEXT NOT NULL,
    created_at TEXT NOT NULL, dead_at TEXT NOT NULL, http_status INTEGER,
    problem TEXT, body_gz BLOB NOT NULL, retired_gz BLOB
);
CREATE TABLE IF NOT EXISTS completed_commands (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, detail TEXT,
    completed_at TEXT NOT NULL, reported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS held_deletions (
    area TEXT PRIMARY KEY, records INTEGER NOT NULL, deleting INTEGER NOT NULL,
    held_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS write_journal (
    write_id TEXT NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL, mis_id TEXT,
    error TEXT, PRIMARY KEY (write_id, idx)
);
CREATE TABLE IF NOT EXISTS writes_done (
    write_id TEXT PRIMARY KEY, area TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    area TEXT NOT NULL, seq INTEGER NOT NULL, record_id TEXT, field TEXT NOT NULL,
    problem TEXT NOT NULL, location TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (area, seq)
);
"""
# Added in schema 2: the ids a full batch retires (see `AgentState.spool`).
_ADDED_COLUMNS: Final = (("outbox", "retired_gz BLOB"), ("dead_letters", "retired_gz BLOB"))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """A batch ready to send: its envelope facts and the gzipped JSON body."""

    batch_id: str
    area: str
    mode: str
    extracted_at: datetime
    records: int
    deleted: int
    body_gz: bytes


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    batch_id: str
    area: str
    mode: str
    created_at: datetime
    records: int
    deleted: int
    size: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    # The JSON body's size, from its gzip trailer (ISIZE, RFC 1952): each body is one member
    # we wrote, far below 4 GiB, so the trailer is exact and no body need be inflated.
    inflated: int


@dataclass(frozen=True, slots=True)
class AreaStatus:
    area: str
    last_full_at: datetime | None = None
    last_extracted_at: datetime | None = None
    last_ok: bool | None = None
    last_error: str | None = None
    last_records: int | None = None
    last_duration: float | None = None
    last_confirmed_at: datetime | None = None
    last_attempt_at: datetime | None = None
    needs_full: bool = False


@dataclass(frozen=True, slots=True)
class HeldArea:
    """An upload the mass-deletion guard kept back: nothing was spooled for it."""

    area: str
    records: int
    deleting: int
    held_at: datetime


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    """A record the last read of its area left out as invalid (no value, only the kind)."""

    area: str
    record_id: str | None
    field: str
    problem: str
    where: str
    at: datetime


@dataclass(frozen=True, slots=True)
class StoredHashes:
    """An area's stored record hashes as read, and the state database's version then: a
    delta's spool takes them as they are while that version holds, rather than read them
    again (a sixth of a night's extraction, profiled)."""

    area: str
    hashes: dict[str, bytes]
    version: tuple[int, int]


@dataclass(frozen=True, slots=True)
class CompletedCommand:
    id: str
    kind: str
    status: str
    detail: str | None
    completed_at: datetime
    reported: bool


class AgentState:
    """The state database.  Not thread-safe: the agent is one loop in one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, one place per change.
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._hash_writes = 0  # hashes stored through this connection: see `_hashes_version`
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column in _ADDED_COLUMNS:
                present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column.split()[0] not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            _pack_record_hashes(db)
            self._set_meta(db, "schema_version", str(SCHEMA_VERSION))

    @classmethod
    def open(cls, state_dir: Path) -> AgentState:
        return cls(state_dir / DB_FILE)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: commits on a clean exit, rolls back on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- hashes and spooling -------------------------------------------------------------

    def hashes(self, area: str) -> dict[str, bytes]:
        """The hash of every record of the area the broker was last sent, by record id."""
        return _stored_hashes(self._db, area)

    def read_hashes(self, area: str) -> StoredHashes:
        """`hashes`, with the version they were read at, for `spool(base=...)`."""
        version = self._hashes_version()  # first: a write after it changes it
        return StoredHashes(area, _stored_hashes(self._db, area), version)

    def _still_stored(self, base: StoredHashes | None, area: str) -> dict[str, bytes] | None:
        """A copy of `base`'s hashes if they are still the area's stored ones, else None.
        Asked inside the write lock, so that nothing can store hashes after the answer."""
        if base is None or base.area != area or base.version != self._hashes_version():
            return None
        return dict(base.hashes)

    def _hashes_version(self) -> tuple[int, int]:
        """Changes whenever hashes may have been stored since: SQLite's data_version moves
        when another connection commits, and our own count when this one stores hashes."""
        (others,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(others), self._hash_writes

    def spool(
        self,
        batches: SpooledBatch | Iterable[SpooledBatch],
        hashes: Mapping[str, bytes],
        deleted: Sequence[str],
        *,
        now: datetime,
        duration: float,
        total_records: int,
        full: bool | None = None,
        base: StoredHashes | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> list[str]:
        """Enqueue one upload's batches, in order, and store the hashes they carry: one transaction.

        `full` (default: the first batch is a `full` one) says the upload re-bases the area:
        its hashes are replaced by `hashes`, and it counts as the area's full upload.  A real
        `full` batch also supersedes every older batch of the area still waiting, as it
        replaces the area on the broker; it is stored with the ids it retires, so that it
        can still be cut into deltas if the broker finds it too large (`replace`).  A split
        full (delta batches) leaves older batches queued: they reach the broker first, and
        its final deletions were computed from hashes that already count them.

        `batches` may be a generator: each body is built, written and dropped in turn, so a
        large area is never held whole in memory twice.  `base` is the hashes the upload was
        diffed against (`read_hashes`): a delta updates those, unless hashes may have been
        stored since, when it reads them again.  `before_commit` is a hook for tests
        that simulate a crash inside the transaction.  Returns the batch ids, in order.
        """
        stream = iter([batches] if isinstance(batches, SpooledBatch) else batches)
        first = next(stream, None)
        if first is None:
            raise ValueError("an upload has at least one batch")
        area = first.area
        rebase = first.mode == "full" if full is None else full
        retired: list[str] = []
        with self.transaction() as db:
            if first.mode == "full":
                retired = self._retired_by_full(db, area, hashes)
                db.execute("DELETE FROM outbox WHERE area = ?", (area,))
            ids = [self._enqueue(db, first, now, retired)]
            for batch in stream:
                if batch.area != area or batch.mode == "full":
                    raise ValueError("one upload is one area, and a full upload is one batch")
                ids.append(self._enqueue(db, batch, now, []))
            stored: Mapping[str, bytes] = hashes
            if not rebase:
                current = self._still_stored(base, area)
                if current is None:
                    current = _stored_hashes(db, area)
                current.update(hashes)
                for record_id in deleted:
                    current.pop(record_id, None)
                stored = current
            self._hash_writes += 1  # even if the transaction then fails: read them again
            _store_hashes(db, area, stored)
            self._extracted(db, area, first.extracted_at, rebase, total_records, duration)
            if before_commit is not None:
                before_commit()
        return ids

    @staticmethod
    def _enqueue(
        db: sqlite3.Connection, batch: SpooledBatch, now: datetime, retired: Sequence[str]
    ) -> str:
        db.execute(
            "INSERT INTO outbox(batch_id, area, mode, created_at, extracted_at, records,"
            " deleted, body_gz, retired_gz) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch.batch_id,
                batch.area,
                batch.mode,
                iso(now),
                iso(batch.extracted_at),
                batch.records,
                batch.deleted,
                batch.body_gz,
                _pack_ids(retired),
            ),
        )
        return batch.batch_id

    def _retired_by_full(
        self, db: sqlite3.Connection, area: str, current: Mapping[str, bytes]
    ) -> list[str]:
        """Every id the broker may hold for the area that the full upload leaves out.

        Those are the ids of the stored hashes, every id the superseded batches named (their
        records, deletions and own retired ids: one may have been applied with its answer
        lost) and the deletions the broker refused.  Only a full batch later cut into deltas
        needs them (`replace`); sent whole, it retires them by leaving them out.
        """
        known = set(_stored_hashes(db, area))
        for body_gz, retired_gz in db.execute(
            "SELECT body_gz, retired_gz FROM outbox WHERE area = ?", (area,)
        ):
            known |= _ids_named(bytes(body_gz), retired_gz)
        known |= self.dead_letter_deletions(area)
        return sorted(known - current.keys())

    def retired(self, batch_id: str) -> list[str]:
        """The ids a waiting full batch retires (empty for a delta)."""
        row = self._db.execute(
            "SELECT retired_gz FROM outbox WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        return [] if row is None else _unpack_ids(row[0])

    def dead_letter_deletions(self, area: str) -> set[str]:
        """Ids whose deletion the broker refused with a parked batch: it may still hold them."""
        out: set[str] = set()
        for body_gz, retired_gz in self._db.execute(
            "SELECT body_gz, retired_gz FROM dead_letters WHERE area = ?", (area,)
        ):
            document = orjson.loads(gzip.decompress(bytes(body_gz)))
            out.update(str(i) for i in document.get("deleted") or [])
            out.update(_unpack_ids(retired_gz))
        return out

    def _extracted(
        self,
        db: sqlite3.Connection,
        area: str,
        at: datetime,
        full: bool,
        records: int,
        duration: float,
    ) -> None:
        self._ensure_area(db, area)
        db.execute(
            "UPDATE area_state SET last_extracted_at = ?, last_attempt_at = ?, last_ok = 1,"
            " last_error = NULL, last_records = ?, last_duration = ?,"
            " last_full_at = CASE WHEN ? THEN ? ELSE last_full_at END,"
            " needs_full = CASE WHEN ? THEN 0 ELSE needs_full END WHERE area = ?",
            (iso(at), iso(at), records, duration, full, iso(at), full, area),
        )

    def extraction_failed(self, area: str, *, now: datetime, error: str, duration: float) -> None:
        with self.transaction() as db:
            self._ensure_area(db, area)
            db.execute(
                "UPDATE area_state SET last_ok = 0, last_error = ?, last_duration = ?,"
                " last_attempt_at = ? WHERE area = ?",
                (error[:1000], duration, iso(now), area),
            )

    def mark_needs_full(self, area: str) -> None:
        with self.transaction() as db:
            self._mark_needs_full(db, area)

    def _mark_needs_full(self, db: sqlite3.Connection, area: str) -> None:
        self._ensure_area(db, area)
        db.execute("UPDATE area_state SET needs_full = 1 WHERE area = ?", (area,))

    @staticmethod
    def _ensure_area(db: sqlite3.Connection, area: str) -> None:
        db.execute("INSERT OR IGNORE INTO area_state(area) VALUES (?)", (area,))

    # --- the outbox ----------------------------------------------------------------------

    def pending(self) -> list[OutboxEntry]:
        """Every batch waiting, oldest first (the order they must reach the broker in)."""
        rows = self._db.execute(
            "SELECT seq, batch_id, area, mode, created_at, records, deleted,"
            " length(body_gz), attempts, next_attempt_at, last_error, substr(body_gz, -4)"
            " FROM outbox ORDER BY seq"
        ).fetchall()
        return [
            OutboxEntry(
                seq=row[0],
                batch_id=row[1],
                area=row[2],
                mode=row[3],
                created_at=_required(parse_iso(row[4])),
                records=row[5],
                deleted=row[6],
                size=row[7],
                attempts=row[8],
                next_attempt_at=parse_iso(row[9]),
                last_error=row[10],
                inflated=int.from_bytes(row[11], "little"),
            )
            for row in rows
        ]

    def body(self, batch_id: str) -> bytes | None:
        row = self._db.execute(
            "SELECT body_gz FROM outbox WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def confirm(self, batch_id: str, *, now: datetime) -> None:
        """The broker applied (or had already applied) the batch: it leaves the outbox."""
        with self.transaction() as db:
            row = db.execute("SELECT area FROM outbox WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM outbox WHERE batch_id = ?", (batch_id,))
            self._ensure_area(db, row[0])
            db.execute(
                "UPDATE area_state SET last_confirmed_at = ? WHERE area = ?", (iso(now), row[0])
            )

    def drop(self, batch_id: str) -> None:
        """Forget a batch the broker superseded; the area's next upload is a full one."""
        with self.transaction() as db:
            row = db.execute("SELECT area FROM outbox WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM outbox WHERE batch_id = ?", (batch_id,))
            self._mark_needs_full(db, row[0])

    def dead_letter(
        self, batch_id: str, *, now: datetime, http_status: int | None, problem: str
    ) -> None:
        """Park a batch the broker refused for good; the area's next upload is a full one."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT area, mode, created_at, body_gz, retired_gz FROM outbox WHERE batch_id = ?",
                (batch_id,),
            ).fetchone()
            if row is None:
                return
            db.execute(
                "INSERT OR REPLACE INTO dead_letters(batch_id, area, mode, created_at, dead_at,"
                " http_status, problem, body_gz, retired_gz) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch_id,
                    row[0],
                    row[1],
                    row[2],
                    iso(now),
                    http_status,
                    problem[:4000],
                    row[3],
                    row[4],
                ),
            )
            db.execute("DELETE FROM outbox WHERE batch_id = ?", (batch_id,))
            self._mark_needs_full(db, row[0])

    def defer(self, batch_id: str, *, next_attempt_at: datetime, error: str) -> int:
        """Count a failed try and set when to try again; returns the attempts so far."""
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
                " WHERE batch_id = ?",
                (iso(next_attempt_at), error[:1000], batch_id),
            )
            row = db.execute(
                "SELECT attempts FROM outbox WHERE batch_id = ?", (batch_id,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def replace(self, batch_id: str, pieces: Sequence[SpooledBatch], *, now: datetime) -> bool:
        """Put `pieces` in the outbox where `batch_id` was, in one transaction; False if gone.

        The pieces take new sequence numbers, so every later batch of the same area is
        moved behind them: the area's order is kept, other areas' order does not matter.
        """
        with self.transaction() as db:
            row = db.execute(
                "SELECT seq, area FROM outbox WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                return False
            seq, area = row
            later = [
                r[0]
                for r in db.execute(
                    "SELECT batch_id FROM outbox WHERE area = ? AND seq > ? ORDER BY seq",
                    (area, seq),
                )
            ]
            db.execute("DELETE FROM outbox WHERE batch_id = ?", (batch_id,))
            for piece in pieces:
                if piece.area != area or piece.mode != "delta":
                    raise ValueError("a batch is replaced by delta batches of its own area")
                self._enqueue(db, piece, now, [])
            for moved in later:
                # Renumbering the rowid is allowed; AUTOINCREMENT then continues above it.
                db.execute(
                    "UPDATE outbox SET seq = (SELECT max(seq) + 1 FROM outbox) WHERE batch_id = ?",
                    (moved,),
                )
        return True

    def upload_limit(self) -> int | None:
        """The limit the broker stated when it last refused a batch as too large, if ever."""
        value = self.meta(UPLOAD_LIMIT_KEY)
        return int(value) if value is not None and value.isdigit() else None

    def batch_limit(self, configured: int) -> int:
        """The `configured` limit, or the broker's own if it told us a lower one (a 413)."""
        broker = self.upload_limit()
        return configured if broker is None else min(broker, configured)

    def set_upload_limit(self, limit: int) -> None:
        self.set_meta(UPLOAD_LIMIT_KEY, str(limit))

    def dead_letter_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    # --- per-area status -----------------------------------------------------------------

    _AREA_STATUS = (
        "SELECT area, last_full_at, last_extracted_at, last_ok, last_error, last_records,"
        " last_duration, last_confirmed_at, last_attempt_at, needs_full FROM area_state"
    )

    def areas(self) -> dict[str, AreaStatus]:
        rows = self._db.execute(self._AREA_STATUS + " ORDER BY area").fetchall()
        return {row[0]: _area_status(row) for row in rows}

    def area(self, area: str) -> AreaStatus | None:
        """One area's status: each extraction asks for its own, not every area's."""
        row = self._db.execute(self._AREA_STATUS + " WHERE area = ?", (area,)).fetchone()
        return None if row is None else _area_status(row)

    # --- held mass deletions --------------------------------------------------------------

    def hold_deletion(self, area: str, *, records: int, deleting: int, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO held_deletions(area, records, deleting, held_at)"
                " VALUES (?, ?, ?, ?)",
                (area, records, deleting, iso(now)),
            )

    def release_hold(self, area: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM held_deletions WHERE area = ?", (area,))

    def held_deletions(self) -> list[HeldArea]:
        rows = self._db.execute(
            "SELECT area, records, deleting, held_at FROM held_deletions ORDER BY area"
        ).fetchall()
        return [HeldArea(r[0], r[1], r[2], _required(parse_iso(r[3]))) for r in rows]

    # --- quarantined records ------------------------------------------------------------

    def set_quarantine(
        self, area: str, items: Iterable[tuple[str | None, str, str, str]], *, now: datetime
    ) -> None:
        """Replace the area's quarantine with the last read's: (id, field, problem, where)."""
        with self.transaction() as db:
            db.execute("DELETE FROM quarantine WHERE area = ?", (area,))
            db.executemany(
                "INSERT INTO quarantine(area, seq, record_id, field, problem, location, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (area, seq, record_id, field_, problem, where, iso(now))
                    for seq, (record_id, field_, problem, where) in enumerate(items)
                ),
            )

    def quarantine(self, limit: int | None = None) -> list[QuarantinedRecord]:
        rows = self._db.execute(
            "SELECT area, record_id, field, problem, location, at FROM quarantine"
            " ORDER BY area, seq LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [
            QuarantinedRecord(r[0], r[1], r[2], r[3], r[4], _required(parse_iso(r[5])))
            for r in rows
        ]

    def quarantine_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT area, count(*) FROM quarantine GROUP BY area").fetchall()
        return {area: int(count) for area, count in rows}

    # --- commands ------------------------------------------------------------------------

    def completed_command(self, command_id: str) -> CompletedCommand | None:
        row = self._db.execute(
            "SELECT id, kind, status, detail, completed_at, reported FROM completed_commands"
            " WHERE id = ?",
            (command_id,),
        ).fetchone()
        return None if row is None else _command(row)

    def complete_command(
        self, command_id: str, *, kind: str, status: str, detail: str | None, now: datetime
    ) -> CompletedCommand:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO completed_commands(id, kind, status, detail, completed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (command_id, kind, status, detail, iso(now)),
            )
        done = self.completed_command(command_id)
        assert done is not None
        return done

    def command_reported(self, command_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE completed_commands SET reported = 1 WHERE id = ?", (command_id,))

    def unreported_commands(self) -> list[CompletedCommand]:
        rows = self._db.execute(
            "SELECT id, kind, status, detail, completed_at, reported FROM completed_commands"
            " WHERE reported = 0 ORDER BY completed_at"
        ).fetchall()
        return [_command(row) for row in rows]

    def forget_commands_before(self, moment: datetime) -> None:
        """Completed ids older than the broker's command lifetime can never come back."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM completed_commands WHERE reported = 1 AND completed_at < ?",
                (iso(moment),),
            )

    # --- write-back journal ----------------------------------------------------------------
    # One row per record as soon as the MIS has it (no record values: only the outcome),
    # and one per write once its results reached the broker (or it was withdrawn).

    def write_outcomes(self, write_id: str) -> dict[int, tuple[str, str | None, str | None]]:
        rows = self._db.execute(
            "SELECT idx, status, mis_id, error FROM write_journal WHERE write_id = ?",
            (write_id,),
        ).fetchall()
        return {int(r[0]): (str(r[1]), r[2], r[3]) for r in rows}

    def journal_write_outcome(
        self, write_id: str, index: int, status: str, mis_id: str | None, error: str | None
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO write_journal(write_id, idx, status, mis_id, error)"
                " VALUES (?, ?, ?, ?, ?)",
                (write_id, index, status, mis_id, error),
            )

    def write_finished(self, write_id: str) -> str | None:
        """`reported` or `withdrawn` once the agent is done with the write, else None."""
        row = self._db.execute(
            "SELECT state FROM writes_done WHERE write_id = ?", (write_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def finish_write(self, write_id: str, area: str, state: str, *, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO writes_done(write_id, area, state, at) VALUES (?, ?, ?, ?)",
                (write_id, area, state, iso(now)),
            )

    def journal_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT status, COUNT(*) FROM write_journal GROUP BY status"
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def forget_writes_before(self, moment: datetime) -> None:
        """The broker stops offering a write once it has its results: old ones can go."""
        with self.transaction() as db:
            db.execute(
                "DELETE FROM write_journal WHERE write_id IN"
                " (SELECT write_id FROM writes_done WHERE at < ?)",
                (iso(moment),),
            )
            db.execute("DELETE FROM writes_done WHERE at < ?", (iso(moment),))

    # --- small facts ---------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            self._set_meta(db, key, value)

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file()
        )


def _command(row: tuple[Any, ...]) -> CompletedCommand:
    return CompletedCommand(
        id=row[0],
        kind=row[1],
        status=row[2],
        detail=row[3],
        completed_at=_required(parse_iso(row[4])),
        reported=bool(row[5]),
    )


def _area_status(row: tuple[Any, ...]) -> AreaStatus:
    return AreaStatus(
        area=row[0],
        last_full_at=parse_iso(row[1]),
        last_extracted_at=parse_iso(row[2]),
        last_ok=None if row[3] is None else bool(row[3]),
        last_error=row[4],
        last_records=row[5],
        last_duration=row[6],
        last_confirmed_at=parse_iso(row[7]),
        last_attempt_at=parse_iso(row[8]),
        needs_full=bool(row[9]),
    )


def _stored_hashes(db: sqlite3.Connection, area: str) -> dict[str, bytes]:
    row = db.execute("SELECT ids, hashes FROM area_hashes WHERE area = ?", (area,)).fetchone()
    if row is None:
        return {}
    ids, packed = orjson.loads(row[0]), bytes(row[1])
    if len(packed) != len(ids) * HASH_BYTES:
        raise sqlite3.DatabaseError(f"the stored record hashes of {area} are damaged")
    digests = [packed[i : i + HASH_BYTES] for i in range(0, len(packed), HASH_BYTES)]
    return dict(zip(ids, digests, strict=True))


def _store_hashes(db: sqlite3.Connection, area: str, hashes: Mapping[str, bytes]) -> None:
    """All of an area's hashes as one row: ids as a JSON list, digests end to end in the same
    order.  A row per record cost a sixth of a full extraction's CPU (profiled) to rewrite."""
    if set(map(len, hashes.values())) - {HASH_BYTES}:  # in C: an area has thousands
        raise ValueError(f"record hashes are {HASH_BYTES} bytes")
    db.execute(
        "INSERT OR REPLACE INTO area_hashes(area, ids, hashes) VALUES (?, ?, ?)",
        (area, orjson.dumps(list(hashes)), b"".join(hashes.values())),
    )


def _pack_record_hashes(db: sqlite3.Connection) -> None:
    """Schema 2 to 3: a row per record in `record_hashes` becomes a row per area."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_hashes'").fetchone() is None:
        return
    areas = [row[0] for row in db.execute("SELECT DISTINCT area FROM record_hashes")]
    for area in areas:
        rows = db.execute("SELECT record_id, hash FROM record_hashes WHERE area = ?", (area,))
        _store_hashes(db, area, {record_id: bytes(digest) for record_id, digest in rows})
    db.execute("DROP TABLE record_hashes")


def _pack_ids(ids: Sequence[str]) -> bytes | None:
    return gzip.compress(orjson.dumps(list(ids)), mtime=0) if ids else None


def _unpack_ids(packed: bytes | None) -> list[str]:
    return [str(i) for i in orjson.loads(gzip.decompress(bytes(packed)))] if packed else []


def _ids_named(body_gz: bytes, retired_gz: bytes | None) -> set[str]:
    """Every id a spooled batch upserts, deletes or retires."""
    document = orjson.loads(gzip.decompress(body_gz))
    ids = {str(r["id"]) for r in document.get("records") or []}
    ids.update(str(i) for i in document.get("deleted") or [])
    ids.update(_unpack_ids(retired_gz))
    return ids


def _required(value: datetime | None) -> datetime:
    assert value is not None
    return value
