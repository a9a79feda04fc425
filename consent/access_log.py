"""The access log: one hash-chained entry per partner read, written before the data leaves.

Appends serialise per school on its row of `access_log_heads`: `UPDATE ... SET last_seq =
last_seq + n ... RETURNING` takes PostgreSQL's row lock (SQLite's write lock), so two
processes never chain from the same head.  Every partner read appends, so `AccessLogWriter`
group-commits: requests queue their entries, one thread writes whatever has queued as one
transaction, and each caller resumes only once its entry is committed (or fails with it).
A batch costs one `UPDATE ... RETURNING` per school in it (taking all of that school's seqs
at once), then one executemany of head `UPDATE`s and one of `INSERT`s: prebuilt Core
statements on the transaction's connection.  Each entry is encoded once
(`LogEntry.canonical`) before it is queued.

On PostgreSQL (psycopg) the rows of a batch and its head hashes are one statement, one
round trip, whatever the batch's size (`_append_batched`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import csv
import io
import json
import queue
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    bindparam,
    cast,
    func,
    insert,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from consent.audit_keys import UnitOfWork
from consent.chain import (
    ChainBreak,
    canonical,
    genesis,
    link_hash_canonical,
    utc_text,
    verify_chain,
)
from consent.errors import AccessLogWriteError, ConsentInvalidError
from consent.models import AccessLogHead, AccessLogRow, LogDecision

KeyFor: TypeAlias = Callable[[str], bytes]
DecisionText: TypeAlias = Literal["allowed", "denied"]
OperationText: TypeAlias = Literal["read", "write"]

MAX_PAGE: Final = 1000
CSV_COLUMNS: Final = (
    "seq",
    "at",
    "partner_id",
    "consent_id",
    "areas",
    "record_count",
    "decision",
    "reason",
    "request_id",
    "hash",
    # Added in 0.4.0, after the columns above, so that readers by position keep working.
    "operation",
    "fields",  # the fields the partner was shared, `;`-joined; `*`: every field of the areas
)
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """What a partner read: built by the read path, chained and stored by the writer."""

    school_id: str
    partner_id: str
    areas: tuple[str, ...]
    record_count: int
    decision: DecisionText
    reason: str
    request_id: str
    at: datetime
    consent_id: str | None = None
    # A partner's write (write-back) or, by default, a read.  Only a write names it in the
    # hashed fields, so every entry chained before writes existed verifies as it did.
    operation: OperationText = "read"
    fields: tuple[str, ...] | None = None  # hashed only when given: older entries verify

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise ValueError("an access-log time must be timezone-aware")
        if self.decision not in ("allowed", "denied"):
            raise ValueError(f"decision must be allowed or denied, not {self.decision!r}")
        if self.operation not in ("read", "write"):
            raise ValueError(f"operation must be read or write, not {self.operation!r}")
        if self.record_count < 0:
            raise ValueError("record_count cannot be negative")
        if not self.areas:
            raise ValueError("an access-log entry names at least one area")
        if len(self.reason) > 64 or len(self.request_id) > 128:
            raise ValueError("reason (64) or request_id (128) too long")
        object.__setattr__(self, "areas", tuple(sorted(set(self.areas))))

    def chained(self) -> dict[str, Any]:
        """The fields the hash covers (everything but seq, which `link_hash` adds)."""
        out: dict[str, Any] = {
            "school_id": self.school_id,
            "partner_id": self.partner_id,
            "consent_id": self.consent_id,
            "areas": list(self.areas),
            "record_count": self.record_count,
            "decision": self.decision,
            "reason": self.reason,
            "request_id": self.request_id,
            "at": self.at,
        }
        if self.operation != "read":
            out["operation"] = self.operation
        if self.fields is not None:
            out["fields"] = list(self.fields)
        return out

    def canonical(self) -> bytes:
        """`canonical(self.chained())`, byte for byte, without its generic walk.

        orjson writes exact `str`, `int` (64-bit) and None as `json.dumps` does in
        `canonical` (tests compare them on every code point and on random entries); any
        other value, or one orjson refuses, takes the generic path, which decides.
        """
        if not (
            self.operation == "read"
            and type(self.record_count) is int
            and all(type(v) is str for v in self._texts)
            and all(type(a) is str for a in self.areas)
            and (self.consent_id is None or type(self.consent_id) is str)
            and (self.fields is None or all(type(f) is str for f in self.fields))
        ):
            return canonical(self.chained())
        at = self.at
        try:
            out = {
                "school_id": self.school_id,
                "partner_id": self.partner_id,
                "consent_id": self.consent_id,
                "areas": self.areas,
                "record_count": self.record_count,
                "decision": self.decision,
                "reason": self.reason,
                "request_id": self.request_id,
                # orjson writes a UTC time as `utc_text` does, at a fraction of the cost,
                # but for a whole second, where it leaves out the microseconds.
                "at": at
                if type(at) is datetime and at.tzinfo is UTC and at.microsecond
                else utc_text(at),
            }
            if self.fields is not None:
                out["fields"] = self.fields
            return orjson.dumps(out, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)
        except orjson.JSONEncodeError:  # e.g. a lone surrogate, or an int beyond 64 bits
            return canonical(self.chained())

    @property
    def _texts(self) -> tuple[str, ...]:
        return (self.school_id, self.partner_id, self.decision, self.reason, self.request_id)


def row_entry(row: AccessLogRow) -> dict[str, Any]:
    """A stored row as `LogEntry.chained` had it, for verification."""
    out: dict[str, Any] = {
        "school_id": row.school_id,
        "partner_id": row.partner_id,
        "consent_id": row.consent_id,
        "areas": list(row.areas),
        "record_count": row.record_count,
        "decision": LogDecision(row.decision).value,
        "reason": row.reason,
        "request_id": row.request_id,
        "at": row.at,
    }
    if row.operation != "read":
        out["operation"] = row.operation
    if row.fields is not None:
        out["fields"] = list(row.fields)
    return out


# ---------------------------------------------------------------------------------------
# Appending
#
# Core statements on the batch's one connection: the ORM adds nothing here but overhead
# (an identity map, flush bookkeeping, per-statement ORM compilation), and every partner
# read pays for this path.

_LOG: Final = AccessLogRow.metadata.tables["access_log"]
_HEADS: Final = AccessLogHead.metadata.tables["access_log_heads"]

# Take `n` seqs at once: the row lock (SQLite's write lock) serialises every writer of the
# school from here until commit.
_RESERVE: Final = (
    update(_HEADS)
    .where(_HEADS.c.school_id == bindparam("p_school", type_=String))
    .values(last_seq=_HEADS.c.last_seq + bindparam("p_count", type_=BigInteger))
    .returning(_HEADS.c.last_seq, _HEADS.c.last_hash)
)
_SET_HEAD_HASH: Final = (
    update(_HEADS)
    .where(_HEADS.c.school_id == bindparam("p_school", type_=String))
    .values(last_hash=bindparam("p_hash", type_=LargeBinary))
)
_INSERT_ROWS: Final = insert(_LOG)
_CREATE_HEAD: Final = {
    "postgresql": postgresql.insert(_HEADS).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_HEADS).on_conflict_do_nothing(),
}


def append_entries(session: Session, entries: Sequence[LogEntry], key_for: KeyFor) -> list[int]:
    """Chain and insert `entries` in the caller's transaction; returns their seqs in order."""
    items = [(e, e.canonical()) for e in entries]
    if session.autoflush:  # as the ORM statements this replaced did: pending rows go first
        session.flush()
    return _append(session.connection(), items, key_for)


def _append(
    conn: Connection, items: Sequence[tuple[LogEntry, bytes]], key_for: KeyFor
) -> list[int]:
    """Chain (entry, canonical bytes) pairs and insert them, in `conn`'s transaction."""
    by_school: dict[str, list[int]] = defaultdict(list)
    for index, (entry, _) in enumerate(items):
        by_school[entry.school_id].append(index)
    seqs = [0] * len(items)
    sql = _statements(conn.dialect)
    cursor = _cursor(conn)
    rows: list[tuple[Any, ...] | dict[str, Any]] = []
    heads: list[tuple[Any, ...] | dict[str, Any]] = []
    try:
        for school_id in sorted(by_school):  # one lock order for every writer: no deadlocks
            indexes = by_school[school_id]
            key = key_for(school_id)
            last_seq, prev = _reserve(conn, cursor, sql, school_id, len(indexes), key)
            for seq, index in enumerate(indexes, start=last_seq - len(indexes) + 1):
                entry, body = items[index]
                prev = link_hash_canonical(prev, seq, body, key)
                rows.append(sql.row(entry, seq, prev))
                seqs[index] = seq
            heads.append(sql.params(sql.set_head, p_school=school_id, p_hash=sql.blob(prev)))
        if rows:  # every head of the batch is held now: one executemany each for the rest
            cursor.executemany(sql.set_head.text, heads)
            cursor.executemany(sql.insert.text, rows)
    finally:
        cursor.close()
    return seqs


def _cursor(conn: Connection) -> Any:
    """A DBAPI cursor of `conn`, in its transaction: every partner read pays for the append,
    and SQLAlchemy's per-statement execution context cost more than the SQL itself."""
    dbapi: Any = conn.connection.dbapi_connection
    return dbapi.cursor()


def _reserve(
    conn: Connection, cursor: Any, sql: _Statements, school_id: str, count: int, key: bytes
) -> tuple[int, bytes]:
    """Take `count` seqs from the school's head, creating the head on its first entry."""
    params = sql.params(sql.reserve, p_school=school_id, p_count=count)
    cursor.execute(sql.reserve.text, params)
    found = cursor.fetchone()
    if found is None:
        create = _CREATE_HEAD.get(conn.dialect.name)
        if create is None:
            raise AccessLogWriteError(f"no access-log support for {conn.dialect.name}")
        head = {"school_id": school_id, "last_seq": 0, "last_hash": genesis(school_id, key)}
        conn.execute(create, head)
        cursor.execute(sql.reserve.text, params)
        found = cursor.fetchone()
    return int(found[0]), bytes(found[1])


@dataclass(frozen=True, slots=True)
class _Sql:
    text: str
    names: tuple[str, ...] | None  # positional parameter order; None: named parameters


def _compiled(statement: Any, dialect: Dialect, keys: Sequence[str] | None = None) -> _Sql:
    compiled = statement.compile(dialect=dialect, column_keys=keys)
    names = tuple(compiled.positiontup or ()) if compiled.positional else None
    return _Sql(compiled.string, names)


class _Statements:
    """The append statements compiled once per dialect, and each column's bind processor
    applied by hand: the values stored are exactly those SQLAlchemy would store (the same
    processors, the dialect's own: SQLite's DATETIME formats times itself), and the few
    distinct `areas` and `decision` values are processed once each.
    """

    def __init__(self, dialect: Dialect) -> None:
        self.reserve = _compiled(_RESERVE, dialect)
        self.set_head = _compiled(_SET_HEAD_HASH, dialect)
        self.insert = _compiled(_INSERT_ROWS, dialect, list(_LOG.c.keys()))

        def processor(name: str) -> Callable[[Any], Any]:
            found = _LOG.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            return found if found is not None else _same

        self.at = processor("at")
        self.blob = processor("hash")
        self._areas = processor("areas")
        self._fields = processor("fields")
        self._decision = processor("decision")
        self._memo: dict[tuple[str, ...] | str, Any] = {}

    @staticmethod
    def params(sql: _Sql, **values: Any) -> tuple[Any, ...] | dict[str, Any]:
        return values if sql.names is None else tuple(values[name] for name in sql.names)

    def _once(self, key: tuple[str, ...] | str, process: Callable[[Any], Any], value: Any) -> Any:
        found = self._memo.get(key, _MISSING)
        if found is _MISSING:
            if len(self._memo) > 1_000:  # unbounded variety: start again
                self._memo.clear()
            found = self._memo[key] = process(value)
        return found

    def row(self, entry: LogEntry, seq: int, digest: bytes) -> tuple[Any, ...] | dict[str, Any]:
        return self.params(
            self.insert,
            school_id=entry.school_id,
            seq=seq,
            at=self.at(entry.at),
            partner_id=entry.partner_id,
            consent_id=entry.consent_id,
            areas=self._once(entry.areas, self._areas, list(entry.areas)),
            record_count=entry.record_count,
            decision=self._once(entry.decision, self._decision, LogDecision(entry.decision)),
            reason=entry.reason,
            request_id=entry.request_id,
            operation=entry.operation,
            hash=self.blob(digest),
            fields=None
            if entry.fields is None
            else self._once(entry.fields, self._fields, list(entry.fields)),
        )


def _same(value: Any) -> Any:
    return value


# ---------------------------------------------------------------------------------------
# PostgreSQL (psycopg): a batch in one statement per school and one for all its rows
#
# Not executemany: psycopg runs it in pipeline mode, whose wait for the server spins on a
# socket that is always writable, burning the CPU the event loop needs; and each row was a
# statement of its own.  Here the rows travel as one JSON document (orjson: next to free),
# which PostgreSQL unpacks with json_to_recordset: one statement, one round trip, for the
# head hashes and every row.  Constant statement texts, so psycopg prepares each once per
# connection.  Lock order is `_append`'s: every school's head in sorted order.

_PG_RESERVE: Final = (
    "UPDATE access_log_heads SET last_seq = last_seq + %s WHERE school_id = %s"
    " RETURNING last_seq, last_hash"
)
_PG_CREATE_HEAD: Final = (
    "INSERT INTO access_log_heads (school_id, last_seq, last_hash) VALUES (%s, 0, %s)"
    " ON CONFLICT DO NOTHING"
)
_PG_SET_HEADS: Final = (
    "WITH heads AS ("
    " UPDATE access_log_heads AS h SET last_hash = decode(v.hash, 'hex')"
    " FROM json_to_recordset(%s::json) AS v(school_id text, hash text)"
    " WHERE h.school_id = v.school_id)"
)


# The writer's fast path, for schools whose heads it knows (it wrote their last entries):
# heads moved and rows inserted in one autocommitted statement, one round trip and no
# lock held between round trips.  A head moves only if it is still where this writer left
# it, and only moved schools' rows are inserted; any other (another process or a worker
# appended since) comes back unmoved and goes through the locking path.
# The heads are locked first, in school order (the locking path's order too): an UPDATE
# joined to a list takes its rows in the join's order, and two writers' batches of the same
# schools in different orders deadlocked.
_PG_MOVE_KNOWN_HEADS: Final = (
    "WITH want AS (SELECT * FROM json_to_recordset(%s::json)"
    " AS w(school_id text, from_seq int8, from_hash text, to_seq int8, to_hash text)),"
    " locked AS MATERIALIZED (SELECT h.school_id FROM access_log_heads AS h"
    " WHERE h.school_id IN (SELECT school_id FROM want) ORDER BY h.school_id FOR UPDATE),"
    " moved AS (UPDATE access_log_heads AS h"
    " SET last_seq = w.to_seq, last_hash = decode(w.to_hash, 'hex') FROM want AS w"
    " WHERE h.school_id = w.school_id AND h.school_id IN (SELECT school_id FROM locked)"
    " AND h.last_seq = w.from_seq"
    " AND h.last_hash = decode(w.from_hash, 'hex') RETURNING h.school_id)"
)
_PG_COMMITTED: Final = (
    "SELECT v.school_id FROM json_to_recordset(%s::json)"
    " AS v(school_id text, to_seq int8, to_hash text)"
    " JOIN access_log AS a ON a.school_id = v.school_id AND a.seq = v.to_seq"
    " AND a.hash = decode(v.to_hash, 'hex')"
)


class _PgRows:
    """`_INSERT_ROWS` as one statement, its rows one JSON document: every column of the
    table (one added later travels too, or fails here, loudly), each value as
    `_Statements.row` binds it, written as JSON and cast back by PostgreSQL."""

    def __init__(self) -> None:
        names, selects, columns = [], [], []
        self._convert: list[tuple[str, Callable[[Any], Any]]] = []
        self._json_text: dict[tuple[Any, ...], str] = {}
        for column in _LOG.c:
            name = column.name
            record_type, select, convert = _pg_json_column(
                column.type, f'v."{name}"', self.json_text
            )
            names.append(f'"{name}"')
            selects.append(select)
            columns.append(f'"{name}" {record_type}')
            self._convert.append((name, convert))
        insert_rows = (
            f"INSERT INTO access_log ({', '.join(names)})"  # noqa: S608
            f" SELECT {', '.join(selects)}"
            f" FROM json_to_recordset(%s::json) AS v({', '.join(columns)})"
        )
        self.text = f"{_PG_SET_HEADS} {insert_rows}"
        self.if_heads_text = (
            f"{_PG_MOVE_KNOWN_HEADS}, rows AS ({insert_rows}"  # noqa: S608 (the table's names)
            " WHERE v.school_id IN (SELECT school_id FROM moved)) SELECT school_id FROM moved"
        )

        # `entry_row` writes the columns it knows by name; a column added later takes the
        # generic path until it learns it (tests compare the two on every column).
        self._direct = frozenset(_LOG.c.keys()) == _ENTRY_ROW_COLUMNS
        self._decision_text: dict[str, Any] = {}

    def row(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {name: convert(values[name]) for name, convert in self._convert}

    def entry_row(
        self, sql: _Statements, entry: LogEntry, seq: int, digest: bytes
    ) -> dict[str, Any]:
        """`self.row(sql.row(entry, seq, digest))` in one step: every partner read builds
        one, and the generic form builds two dicts and converts every value twice."""
        if not self._direct:
            values = sql.row(entry, seq, digest)
            assert isinstance(values, dict)  # psycopg's paramstyle is named
            return self.row(values)
        decision = self._decision_text.get(entry.decision)
        if decision is None:  # two values: each processed once, as `sql.row` processes it
            decision = sql.row(entry, seq, digest)
            assert isinstance(decision, dict)
            decision = self._decision_text[entry.decision] = decision["decision"]
        return {
            "school_id": entry.school_id,
            "seq": seq,
            "at": sql.at(entry.at),
            "partner_id": entry.partner_id,
            "consent_id": entry.consent_id,
            "areas": self._list_text(entry.areas),
            "record_count": entry.record_count,
            "decision": decision,
            "reason": entry.reason,
            "request_id": entry.request_id,
            "operation": entry.operation,
            "hash": digest.hex(),
            "fields": None if entry.fields is None else self._list_text(entry.fields),
        }

    def _list_text(self, values: tuple[str, ...]) -> str | None:
        found = self._json_text.get(values)
        return found if found is not None else self.json_text(list(values))

    def json_text(self, value: Any) -> str | None:
        """A JSON column's value (psycopg's Json wrapper holds it) as json.dumps writes it,
        as psycopg would have sent it; the few distinct area lists are encoded once."""
        if value is None:
            return None
        obj = getattr(value, "obj", value)
        if not isinstance(obj, list) or not all(type(v) is str for v in obj):
            return json.dumps(obj)
        key = tuple(obj)
        found = self._json_text.get(key)
        if found is None:
            if len(self._json_text) > 1_000:  # unbounded variety: start again
                self._json_text.clear()
            found = self._json_text[key] = json.dumps(obj)
        return found


def _pg_json_column(
    kind: Any, ref: str, json_text: Callable[[Any], str | None]
) -> tuple[str, str, Callable[[Any], Any]]:
    """(record type in json_to_recordset, select expression, value converter)."""
    if isinstance(kind, TypeDecorator):
        kind = kind.impl
    if isinstance(kind, LargeBinary):
        return "text", f"decode({ref}, 'hex')", _hex
    if isinstance(kind, JSON):
        return "text", f"{ref}::json", json_text
    if isinstance(kind, DateTime):
        return ("timestamptz" if kind.timezone else "timestamp"), ref, _same
    if isinstance(kind, Boolean):
        return "bool", ref, _same
    if isinstance(kind, Integer):
        return "int8", ref, _same
    if isinstance(kind, String):  # Enum too: its value, as text
        return "text", ref, _same
    raise TypeError(f"no PostgreSQL batch form for an access_log column of type {kind!r}")


def _hex(value: Any) -> str | None:
    """Bytes as hex; psycopg's Binary wrapper (LargeBinary binds it) holds them in `obj`."""
    return None if value is None else bytes(getattr(value, "obj", value)).hex()


_ENTRY_ROW_COLUMNS: Final = frozenset(
    {
        "school_id",
        "seq",
        "at",
        "partner_id",
        "consent_id",
        "areas",
        "record_count",
        "decision",
        "reason",
        "request_id",
        "operation",
        "hash",
        "fields",
    }
)
_PG_ROWS: list[_PgRows] = []


def _pg_rows() -> _PgRows:
    if not _PG_ROWS:
        _PG_ROWS.append(_PgRows())
    return _PG_ROWS[0]


def _batched_statements(conn: Connection) -> bool:
    return conn.dialect.driver == "psycopg"


def _append_batched(
    conn: Connection,
    items: Sequence[tuple[LogEntry, bytes]],
    key_for: KeyFor,
    left: dict[str, tuple[int, bytes]] | None = None,
) -> list[int]:
    """`_append` on psycopg in a round trip per school and one for every row; each
    school's head as this transaction leaves it goes into `left`."""
    dbapi: Any = conn.connection.dbapi_connection
    by_school: dict[str, list[int]] = defaultdict(list)
    for index, (entry, _) in enumerate(items):
        by_school[entry.school_id].append(index)
    sql = _statements(conn.dialect)
    seqs = [0] * len(items)
    pg = _pg_rows()
    rows: list[dict[str, Any]] = []
    heads: list[dict[str, str]] = []
    with dbapi.cursor() as cursor:
        for school_id in sorted(by_school):
            indexes = by_school[school_id]
            key = key_for(school_id)
            cursor.execute(_PG_RESERVE, (len(indexes), school_id))
            found = cursor.fetchone()
            if found is None:  # the school's first entry: create its head, then take seqs
                cursor.execute(_PG_CREATE_HEAD, (school_id, genesis(school_id, key)))
                cursor.execute(_PG_RESERVE, (len(indexes), school_id))
                found = cursor.fetchone()
            last_seq, prev = int(found[0]), bytes(found[1])
            for seq, index in enumerate(indexes, start=last_seq - len(indexes) + 1):
                entry, body = items[index]
                prev = link_hash_canonical(prev, seq, body, key)
                seqs[index] = seq
                rows.append(pg.entry_row(sql, entry, seq, prev))
            heads.append({"school_id": school_id, "hash": prev.hex()})
            if left is not None:
                left[school_id] = (last_seq, prev)
        cursor.execute(pg.text, (orjson.dumps(heads).decode(), orjson.dumps(rows).decode()))
    return seqs


_MISSING: Final = object()
_HEADS_KNOWN: Final = 10_000
_STATEMENTS: dict[str, _Statements] = {}


def _statements(dialect: Dialect) -> _Statements:
    key = f"{dialect.name}+{dialect.driver}+{dialect.paramstyle}"
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = _Statements(dialect)
    return found


@dataclass(slots=True)
class _Pending:
    entry: LogEntry
    body: bytes  # the entry's canonical bytes, encoded before it was queued
    future: asyncio.Future[int]


@dataclass
class AccessLogWriter:
    """Group-committing appender, one per API process: `seq = await writer.append(entry)`.

    `append` returns only after the entry's transaction has committed and raises
    `AccessLogWriteError` if it did not, so the read it describes can fail instead.

    The writer takes everything queued as one batch.  When that is fewer than
    `linger_batch` entries and appends are overlapping (this batch or the one before had
    more than one), it waits up to `linger` seconds for `linger_batch` to be queued, so
    batches grow under load; one caller at a time never waits.  `linger=0` turns the wait
    off.
    """

    unit: UnitOfWork
    key_for: KeyFor
    max_batch: int = 500
    linger: float = 0.001
    linger_batch: int = 16
    # Queued entries, oldest first: a deque, as asyncio.Queue's bookkeeping (its getters,
    # its unfinished-task count and event) cost every read more than the append itself.
    _pending: deque[_Pending] = field(default_factory=deque, init=False)
    _accepting: bool = field(default=False, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _thread: _WriterThread | None = field(default=None, init=False)
    # The writer task waiting for `_wake_at` entries to be queued (the first, or more).
    _waiter: asyncio.Future[None] | None = field(default=None, init=False)
    _wake_at: int = field(default=0, init=False)
    _last_batch: int = field(default=0, init=False)
    # PostgreSQL: the engine of the locking path's sessions, and each school's head as this
    # writer last left it (touched by the writer's one thread only).
    _engine: Engine | None = field(default=None, init=False)
    _heads: dict[str, tuple[int, bytes]] = field(default_factory=dict, init=False)
    _fast: Any = field(default=None, init=False)  # `_fast_connection`'s, the thread's alone

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.linger < 0 or self.linger_batch < 1:
            raise ValueError("max_batch and linger_batch must be >= 1 and linger >= 0")

    @property
    def running(self) -> bool:
        """Accepting entries: started, and neither stopped nor ended by an error."""
        return self._accepting and self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._thread = _WriterThread(self._write)
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="access-log-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop; later appends fail."""
        if self._task is None:
            return
        self._accepting = False
        self._wake()
        await self._task
        self._task = None
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        if self._fast is not None:  # the thread has ended: nothing else uses it
            with contextlib.suppress(Exception):
                self._fast.close()
            self._fast = None

    async def append(self, entry: LogEntry) -> int:
        try:
            body = entry.canonical()  # a malformed entry fails here, alone, not its batch
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise AccessLogWriteError(f"the access-log entry cannot be encoded: {exc}") from exc
        if not self._accepting:
            raise AccessLogWriteError("the access log is not accepting entries")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        pending = self._pending
        pending.append(_Pending(entry, body, future))
        if self._waiter is not None and len(pending) >= self._wake_at:
            self._wake()
        return await future

    def append_now(self, session: Session, entry: LogEntry) -> int:
        """Append one entry in the caller's transaction (workers, tests); caller commits."""
        return append_entries(session, [entry], self.key_for)[0]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._pending
        try:
            while pending or self._accepting:
                if not pending:
                    await self._wait(loop, 1, None)
                    continue
                batch = self._take(self.max_batch)
                if self._accepting and self._should_linger(batch):
                    await self._wait(loop, self.linger_batch - len(batch), self.linger)
                    batch += self._take(self.max_batch - len(batch))
                self._last_batch = len(batch)
                assert self._thread is not None
                await self._thread.write(loop, batch)  # its callers are answered by then
        finally:  # stopped (nothing is queued) or ended by an error: nothing more is taken
            self._accepting = False
            left = list(pending)
            pending.clear()
            _fail(left, RuntimeError("the access-log writer stopped"))

    def _take(self, limit: int) -> list[_Pending]:
        """Up to `limit` queued entries, oldest first."""
        pending = self._pending
        if len(pending) <= limit:
            batch = list(pending)
            pending.clear()
            return batch
        return [pending.popleft() for _ in range(limit)]

    def _should_linger(self, batch: list[_Pending]) -> bool:
        if self.linger <= 0 or len(batch) >= min(self.linger_batch, self.max_batch):
            return False
        return len(batch) > 1 or self._last_batch > 1

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, wanted: int, at_most: float | None
    ) -> None:
        """Wait until `wanted` entries are queued, `at_most` seconds have passed (None: no
        limit) or the writer is told to stop."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter, self._wake_at = waiter, wanted
        timer = None if at_most is None else loop.call_later(at_most, self._wake)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _write(self, items: list[tuple[LogEntry, bytes]]) -> list[int]:
        keys = {e.school_id: self.key_for(e.school_id) for e, _ in items}  # before any lock
        seqs: list[int | None] = [None] * len(items)
        if self._engine is not None and self._heads:
            self._append_known(items, keys.__getitem__, seqs)
        rest = [index for index, seq in enumerate(seqs) if seq is None]
        if rest:
            locked = [items[index] for index in rest]
            for attempt in range(_DEADLOCK_ATTEMPTS):
                try:
                    written = self._write_once(locked, keys.__getitem__)
                    break
                except _StaleConnectionError:
                    # Found dead before its commit (the pool does not ping: a round trip
                    # per batch); the unit's rollback has discarded it.  Once more, on a
                    # new one.
                    written = self._write_once(locked, keys.__getitem__)
                    break
                except Exception as exc:
                    # PostgreSQL broke a deadlock by rolling this transaction back: nothing
                    # of it was written, and the next try finds the other writer done.
                    if _sqlstate(exc) != "40P01" or attempt == _DEADLOCK_ATTEMPTS - 1:
                        raise
            for index, seq in zip(rest, written, strict=True):
                seqs[index] = seq
        return [seq for seq in seqs if seq is not None]

    def _append_known(
        self, items: list[tuple[LogEntry, bytes]], key_for: KeyFor, seqs: list[int | None]
    ) -> None:
        """The fast path: every entry of a school whose head this writer knows, in one
        autocommitted statement.  Fills `seqs` for the schools it wrote."""
        assert self._engine is not None
        by_school: dict[str, list[int]] = defaultdict(list)
        for index, (entry, _) in enumerate(items):
            if entry.school_id in self._heads:
                by_school[entry.school_id].append(index)
        if not by_school:
            return
        sql, pg = _statements(self._engine.dialect), _pg_rows()
        want: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        planned: dict[str, tuple[int, bytes]] = {}
        for school_id, indexes in by_school.items():
            last_seq, prev = self._heads.pop(school_id)  # known again only once written
            key = key_for(school_id)
            start = prev
            for seq, index in enumerate(indexes, start=last_seq + 1):
                entry, body = items[index]
                prev = link_hash_canonical(prev, seq, body, key)
                rows.append(pg.entry_row(sql, entry, seq, prev))
            to_seq = last_seq + len(indexes)
            planned[school_id] = (to_seq, prev)
            want.append(
                {
                    "school_id": school_id,
                    "from_seq": last_seq,
                    "from_hash": start.hex(),
                    "to_seq": to_seq,
                    "to_hash": prev.hex(),
                }
            )
        moved = self._move_known_heads(pg, want, rows, planned)
        for school_id in moved:
            to_seq, last_hash = planned[school_id]
            for seq, index in enumerate(
                by_school[school_id], start=to_seq - len(by_school[school_id]) + 1
            ):
                seqs[index] = seq
            self._heads[school_id] = (to_seq, last_hash)
        if len(self._heads) > _HEADS_KNOWN:  # unbounded variety: start again
            self._heads.clear()

    def _move_known_heads(
        self,
        pg: _PgRows,
        want: list[dict[str, Any]],
        rows: list[dict[str, Any]],
        planned: dict[str, tuple[int, bytes]],
    ) -> set[str]:
        """The schools whose heads moved and whose rows are committed."""
        assert self._engine is not None
        params = (orjson.dumps(want).decode(), orjson.dumps(rows).decode())
        raw = self._fast_connection()
        dbapi: Any = raw.dbapi_connection
        try:
            with dbapi.cursor() as cursor:
                cursor.execute(pg.if_heads_text, params)
                return {str(row[0]) for row in cursor.fetchall()}
        except Exception:
            if not dbapi.closed:
                # The server refused the statement (a deadlock broken, say): in autocommit
                # nothing of it was written, and the connection is good for the next.
                return set()
            self._fast = None  # the next batch starts on a new connection
            with contextlib.suppress(Exception):
                raw.close()
            # The connection died with the statement in flight: it may have committed.
            # The rows say which (each planned last hash is unique to this batch).
            with self.unit() as session:
                conn = session.connection()
                found = conn.exec_driver_sql(
                    _PG_COMMITTED,
                    (
                        orjson.dumps(
                            [
                                {"school_id": s, "to_seq": q, "to_hash": h.hex()}
                                for s, (q, h) in planned.items()
                            ]
                        ).decode(),
                    ),
                )
                return {str(row[0]) for row in found}

    def _fast_connection(self) -> Any:
        """The fast path's own connection, in autocommit (one statement, its own
        transaction: no BEGIN, no COMMIT) for as long as it lives.  Taken out of the pool
        (which frees its slot): a checkout and checkin per batch, and autocommit turned on
        and off again, cost the writer more CPU than the statement."""
        if self._fast is None:
            assert self._engine is not None
            raw = self._engine.raw_connection()
            raw.detach()  # closing it now closes the connection
            dbapi: Any = raw.dbapi_connection  # a detached one has no driver_connection
            try:
                dbapi.autocommit = True
            except Exception:
                raw.close()
                raise
            self._fast = raw
        return self._fast

    def _write_once(self, items: list[tuple[LogEntry, bytes]], key_for: KeyFor) -> list[int]:
        dbapi: Any = None
        committing = False
        left: dict[str, tuple[int, bytes]] = {}
        try:
            with self.unit() as session:
                conn = session.connection()
                if not _batched_statements(conn):
                    return _append(conn, items, key_for)
                dbapi = conn.connection.dbapi_connection
                seqs = _append_batched(conn, items, key_for, left)
                committing = True
            self._engine = conn.engine
            self._heads.update(left)  # committed: where the next batch starts from
            return seqs
        except Exception as exc:
            # Dead before the commit was sent (the server restarted since the connection
            # was pooled): nothing of the batch can have been committed.
            if dbapi is not None and dbapi.closed and not committing:
                raise _StaleConnectionError(str(exc)) from exc
            raise


_DEADLOCK_ATTEMPTS: Final = 3


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, through SQLAlchemy's wrapper if any."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None)


class _StaleConnectionError(Exception):
    pass


_Job: TypeAlias = tuple[list[_Pending], asyncio.AbstractEventLoop, asyncio.Future[None]]


class _WriterThread:
    """The writer's one thread, for its whole life, taking batches in order.

    Not `run_in_executor`: a pool's hand-off (its work item, a concurrent future chained to
    the loop's, an idle semaphore released after every job) cost more per batch than the
    batch's own bookkeeping.  Here a batch is one put on a C queue and one call back into
    the loop, which answers the batch's callers itself: they resume in the loop's next
    turn, not one turn later, after the writer's task has woken to answer them.
    """

    def __init__(self, write: Callable[[list[tuple[LogEntry, bytes]]], list[int]]) -> None:
        self._write = write
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # A daemon: a batch cut short at exit was never committed, so no caller was told it
        # was (and no data left); a forgotten writer does not hold the process open.
        self._thread = threading.Thread(target=self._serve, name="access-log", daemon=True)
        self._thread.start()

    def write(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> asyncio.Future[None]:
        """Write `batch`; the future is done once each of its callers has its seq (or the
        batch's failure), in `loop`."""
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((batch, loop, done))
        return done

    def stop(self) -> None:
        """Finish the batches handed over, then end the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            batch, loop, done = job
            seqs: list[int] | None = None
            failure: BaseException | None = None
            try:
                seqs = self._write([(p.entry, p.body) for p in batch])
            except BaseException as exc:  # the batch's failure is its callers' to see
                failure = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_settle, batch, done, seqs, failure)


def _settle(
    batch: list[_Pending],
    done: asyncio.Future[None],
    seqs: list[int] | None,
    failure: BaseException | None,
) -> None:
    """In the loop: each caller's seq, or the batch's failure; then the writer's turn."""
    try:
        if failure is not None:
            _fail(batch, failure)
        else:
            assert seqs is not None
            for one, seq in zip(batch, seqs, strict=True):
                if not one.future.done():  # the caller may have gone away
                    one.future.set_result(seq)
    except Exception as exc:  # seqs not matching the batch: no caller is left waiting
        _fail(batch, exc)
    finally:
        if not done.cancelled():  # the writer's task was cancelled meanwhile
            done.set_result(None)


def _fail(batch: Iterable[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            error = AccessLogWriteError(f"the access-log entry could not be written: {exc}")
            error.__cause__ = exc
            pending.future.set_exception(error)


# ---------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, slots=True)
class LogFilter:
    """since is inclusive, until exclusive; `area` matches an entry naming it among others."""

    since: datetime | None = None
    until: datetime | None = None
    partner_id: str | None = None
    area: str | None = None
    outcome: DecisionText | None = None


@dataclass(frozen=True, slots=True)
class LogPage:
    entries: list[AccessLogRow]
    next_cursor: str | None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        seq = int(value)
        if kind != "seq" or not 0 <= seq < 2**63:  # a 64-bit column: SQL cannot bind more
            raise ValueError(text)
        return seq
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ConsentInvalidError(f"invalid cursor {cursor!r}") from None


def list_entries(
    session: Session,
    school_id: str,
    flt: LogFilter,
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> LogPage:
    """Newest first (by append order), `limit` at a time."""
    if not 1 <= limit <= MAX_PAGE:
        raise ConsentInvalidError(f"limit must be between 1 and {MAX_PAGE}")
    stmt = select(AccessLogRow).where(AccessLogRow.school_id == school_id)
    if flt.since is not None:
        stmt = stmt.where(col(AccessLogRow.at) >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(col(AccessLogRow.at) < flt.until)
    if flt.partner_id is not None:
        stmt = stmt.where(AccessLogRow.partner_id == flt.partner_id)
    if flt.area is not None:
        stmt = stmt.where(_names_area(flt.area))
    if flt.outcome is not None:
        stmt = stmt.where(AccessLogRow.decision == LogDecision(flt.outcome))
    if cursor is not None:
        stmt = stmt.where(col(AccessLogRow.seq) < decode_cursor(cursor))
    rows = list(session.exec(stmt.order_by(col(AccessLogRow.seq).desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return LogPage(rows, encode_cursor(rows[-1].seq) if more else None)


def _names_area(area: str) -> ColumnElement[bool]:
    """`areas` (a JSON list of names) holds `area`: its quoted name in the stored text.

    One expression for SQLite and PostgreSQL alike; a JSON string is quoted, so a name
    never matches part of another, and LIKE's own wildcards are escaped.
    """
    quoted = orjson.dumps(area).decode()
    pattern = quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return cast(col(AccessLogRow.areas), String).like(f"%{pattern}%", escape="\\")


def reads_between(
    session: Session,
    school_id: str,
    partner_id: str,
    start: datetime,
    end: datetime,
    areas: Collection[str],
) -> list[AccessLogRow]:
    """Allowed reads by the partner of any of `areas` with start <= at <= end, oldest first."""
    stmt = (
        select(AccessLogRow)
        .where(
            AccessLogRow.school_id == school_id,
            AccessLogRow.partner_id == partner_id,
            AccessLogRow.decision == LogDecision.ALLOWED,
            col(AccessLogRow.at) >= start,
            col(AccessLogRow.at) <= end,
        )
        .order_by(col(AccessLogRow.seq))
    )
    wanted = set(areas)
    return [row for row in session.exec(stmt) if wanted.intersection(row.areas)]


def entry_json(row: AccessLogRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at,
        "partner_id": row.partner_id,
        "consent_id": row.consent_id,
        "areas": list(row.areas),
        "record_count": row.record_count,
        "decision": LogDecision(row.decision).value,
        "operation": row.operation,
        "reason": row.reason,
        "request_id": row.request_id,
        "hash": bytes(row.hash).hex(),
        "fields": None if row.fields is None else list(row.fields),
    }


# ---------------------------------------------------------------------------------------
# CSV export


def csv_safe(value: str) -> str:
    """Defuse spreadsheet formulas: a cell must never start with = + - @ (or tab, CR)."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def csv_lines(rows: Iterable[AccessLogRow], *, header: bool = True) -> Iterator[str]:
    """RFC 4180 lines (CRLF, quoted where needed), in `CSV_COLUMNS` order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    if header:
        writer.writerow(CSV_COLUMNS)
    for row in rows:
        cells = entry_json(row)
        cells["at"] = _rfc3339(row.at)
        cells["areas"] = ";".join(row.areas)
        cells["consent_id"] = row.consent_id or ""
        cells["fields"] = "*" if row.fields is None else ";".join(row.fields)
        writer.writerow([csv_safe(str(cells[name])) for name in CSV_COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield _drain(buffer)
    yield _drain(buffer)


def iter_csv(
    unit: UnitOfWork, school_id: str, flt: LogFilter, page_size: int = MAX_PAGE
) -> Iterator[str]:
    """The whole filtered log as CSV, newest first, reading one page per short session."""
    cursor: str | None = None
    header = True
    while True:
        with unit() as session:
            page = list_entries(session, school_id, flt, limit=page_size, cursor=cursor)
        yield from csv_lines(page.entries, header=header)
        header = False
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, slots=True)
class VerifyReport:
    school_id: str
    entries: int
    head_seq: int | None
    breaks: list[ChainBreak]

    @property
    def intact(self) -> bool:
        return not self.breaks


def verify(session: Session, school_id: str, key: bytes | None) -> VerifyReport:
    """Check a school's whole chain against its stored hashes and its head row.

    `key` None means the deployment never made an audit key, so any stored entry is
    unverifiable: it is reported as altered.
    """
    stmt = (
        select(AccessLogRow)
        .where(AccessLogRow.school_id == school_id)
        .order_by(col(AccessLogRow.seq))
        .execution_options(yield_per=1000)
    )
    rows = [(r.seq, row_entry(r), bytes(r.hash)) for r in session.exec(stmt)]
    head_row = session.get(AccessLogHead, school_id)
    head = None if head_row is None else (head_row.last_seq, bytes(head_row.last_hash))
    if key is None:
        breaks = [ChainBreak(seq, "altered") for seq, _, _ in rows]
    else:
        breaks = verify_chain(school_id, rows, head, key=key)
    if head is None and rows:  # the head row itself was removed
        breaks.append(ChainBreak(rows[-1][0], "head_mismatch"))
    return VerifyReport(school_id, len(rows), None if head is None else head[0], breaks)


def count_entries(session: Session, school_id: str) -> int:
    stmt = select(func.count()).select_from(AccessLogRow).where(AccessLogRow.school_id == school_id)
    return int(session.exec(stmt).one())
