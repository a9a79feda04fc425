"""SQL of the cache tiers, in Core: one statement per bulk step, no ORM object per record.

Functions take the session's connection, so they run in the caller's transaction; only the
caller commits.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, NamedTuple, TypeAlias

import orjson
from sqlalchemy import (
    Connection,
    Insert,
    LargeBinary,
    Row,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.elements import ClauseElement

from cache.models import CacheTier, cached_areas, cached_records
from cache.naming import instant_key

AnyRow: TypeAlias = Row[*tuple[Any, ...]]
# SQLite allows 32766 bound parameters per statement; stay far below on every database.
_IN_CHUNK: Final = 900


@dataclass(frozen=True, slots=True)
class AreaState:
    """A snapshot of one `cached_areas` row."""

    school_id: str
    area: str
    as_of: datetime | None
    purge_after: datetime | None
    tier: CacheTier
    data_version: int
    last_seq: int
    record_count: int
    created_at: datetime
    updated_at: datetime
    last_read_at: datetime | None
    last_requested_at: datetime | None
    refresh_requested_at: datetime | None
    cold_blob_key: str | None

    @property
    def cached(self) -> bool:
        return self.as_of is not None


class RecordState(NamedTuple):
    """What change detection needs of a stored record; no ciphertext.

    A named tuple: an upload reads one for each record it may change, and a frozen
    dataclass took longer to build than the row took to read (profiled).
    """

    record_key: str
    seq: int
    deleted: bool
    changed_at: datetime | None  # a tombstone's; None for a live record (`record_states`)
    content_hash: bytes
    blob_key: str | None


def _area_state(row: AnyRow) -> AreaState:
    return AreaState(**row._asdict())


def _in_area(school_id: str, area: str) -> Any:
    return and_(cached_records.c.school_id == school_id, cached_records.c.area == area)


# The area's row, found by bound parameters: statements built once are compiled once, and
# every upload locks and then updates its area's row (profiled: a statement built per
# call cost more than its execution).
_THIS_AREA: Final = and_(
    cached_areas.c.school_id == bindparam("k_school"), cached_areas.c.area == bindparam("k_area")
)
_AREA: Final = select(cached_areas).where(_THIS_AREA)
_LOCK_AREA: Final = _AREA.with_for_update()
_TOUCH_AREA: Final = update(cached_areas).where(_THIS_AREA).values(tier=cached_areas.c.tier)
_DELETE_AREA: Final = delete(cached_areas).where(_THIS_AREA)


def _this_area(school_id: str, area: str) -> dict[str, str]:
    """The parameters of `_THIS_AREA`."""
    return {"k_school": school_id, "k_area": area}


def area_state(conn: Connection, school_id: str, area: str) -> AreaState | None:
    row = conn.execute(_AREA, _this_area(school_id, area)).first()
    return None if row is None else _area_state(row)


def school_areas(conn: Connection, school_id: str) -> list[AreaState]:
    query = (
        select(cached_areas)
        .where(cached_areas.c.school_id == school_id)
        .order_by(cached_areas.c.area)
    )
    return [_area_state(row) for row in conn.execute(query)]


_PLACEHOLDER_COLUMNS: Final = (
    "school_id",
    "area",
    "tier",
    "data_version",
    "last_seq",
    "record_count",
    "created_at",
    "updated_at",
)


@functools.cache
def _insert_placeholder(dialect: str) -> Insert:
    """INSERT of an uncached area's row that does nothing if the row exists."""
    module: Any
    if dialect == "postgresql":
        module = postgresql
    elif dialect == "sqlite":
        module = sqlite
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(dialect)
    values: dict[str, Any] = {name: bindparam(name) for name in _PLACEHOLDER_COLUMNS}
    statement: Insert = module.insert(cached_areas).values(values).on_conflict_do_nothing()
    return statement


def lock_area(conn: Connection, school_id: str, area: str, now: datetime) -> AreaState:
    """Lock the area's row for this transaction, creating an uncached placeholder if none.

    Writing first takes SQLite's write lock before any read (a read-then-write transaction
    can fail at once there when another writer committed in between); on PostgreSQL the
    row lock serialises writers of one area.  data_version starts at the creation time in
    microseconds, so a purged and re-cached area never reuses a version (hot keys, ETags).
    """
    placeholder = {
        "school_id": school_id,
        "area": area,
        "tier": CacheTier.WARM,
        "data_version": instant_key(now),
        "last_seq": 0,
        "record_count": 0,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(_insert_placeholder(conn.dialect.name), placeholder)
    row = conn.execute(_LOCK_AREA, _this_area(school_id, area))
    return _area_state(row.one())


def lock_existing_area(conn: Connection, school_id: str, area: str) -> AreaState | None:
    """Lock the area's row if it exists (a no-op UPDATE takes the write lock on both DBs)."""
    touched = conn.execute(_TOUCH_AREA, _this_area(school_id, area))
    return area_state(conn, school_id, area) if touched.rowcount else None


@functools.lru_cache(maxsize=64)
def _update_area(names: tuple[str, ...]) -> Update:
    return update(cached_areas).where(_THIS_AREA).values({name: bindparam(name) for name in names})


def update_area(conn: Connection, school_id: str, area: str, **values: Any) -> None:
    """Set the given columns of the area's row to plain values."""
    if any(isinstance(value, ClauseElement) for value in values.values()):
        raise TypeError("update_area sets plain values; write an expression's UPDATE itself")
    statement = _update_area(tuple(sorted(values)))
    conn.execute(statement, _this_area(school_id, area) | values)


def delete_area_records(conn: Connection, school_id: str, area: str) -> int:
    """Delete every record row of the area by primary-key prefix; return how many."""
    return conn.execute(delete(cached_records).where(_in_area(school_id, area))).rowcount


def delete_area(conn: Connection, school_id: str, area: str) -> int:
    """Delete the area and its records; return the record rows deleted."""
    deleted = delete_area_records(conn, school_id, area)
    conn.execute(_DELETE_AREA, _this_area(school_id, area))
    return deleted


def count_records(conn: Connection, school_id: str, area: str) -> int:
    query = select(func.count()).select_from(cached_records).where(_in_area(school_id, area))
    return int(conn.execute(query).scalar_one())


# Asked by every upload: built once, as the area's own statements are.
_LIVE_RECORDS: Final = (
    select(func.count())
    .select_from(cached_records)
    .where(
        cached_records.c.school_id == bindparam("school_id"),
        cached_records.c.area == bindparam("area"),
        cached_records.c.deleted.is_(False),
    )
)


def count_live_records(conn: Connection, school_id: str, area: str) -> int:
    """Records of the area that are not tombstones."""
    params = {"school_id": school_id, "area": area}
    return int(conn.execute(_LIVE_RECORDS, params).scalar_one())


def expired_areas(conn: Connection, now: datetime, limit: int) -> list[AreaState]:
    """Areas more than 30 days out of date, found through the purge_after index alone."""
    query = (
        select(cached_areas)
        .where(cached_areas.c.purge_after < now)
        .order_by(cached_areas.c.purge_after)
        .limit(limit)
    )
    return [_area_state(row) for row in conn.execute(query)]


def areas_purged_before(conn: Connection, bound: datetime) -> list[AreaState]:
    """Cached areas whose purge_after is at or before `bound` (stale ones, for refresh)."""
    query = select(cached_areas).where(cached_areas.c.purge_after <= bound)
    return [_area_state(row) for row in conn.execute(query)]


def uncached_requested(conn: Connection, asked_since: datetime) -> list[AreaState]:
    """Areas a partner asked for since `asked_since` that were never cached."""
    query = select(cached_areas).where(
        cached_areas.c.as_of.is_(None), cached_areas.c.last_requested_at >= asked_since
    )
    return [_area_state(row) for row in conn.execute(query)]


def idle_warm_areas(conn: Connection, read_before: datetime, limit: int) -> list[AreaState]:
    """Warm, cached areas not read (or, never read, not created) since `read_before`."""
    idle = or_(
        cached_areas.c.last_read_at < read_before,
        and_(cached_areas.c.last_read_at.is_(None), cached_areas.c.created_at < read_before),
    )
    query = (
        select(cached_areas)
        .where(cached_areas.c.tier == CacheTier.WARM, cached_areas.c.as_of.is_not(None), idle)
        .limit(limit)
    )
    return [_area_state(row) for row in conn.execute(query)]


# Only a tombstone's change time is ever asked (a full upload trims old tombstones by it).
# Read for every record, it cost a string parse per row on SQLite, and a full upload of a
# school already cached reads every row of the area.
_TOMBSTONED_AT: Final = case(
    (cached_records.c.deleted, cached_records.c.changed_at), else_=null()
).label("changed_at")
# Built once: a statement made per call (and per chunk of keys) was compiled each time.
_STATES: Final = select(
    cached_records.c.record_key,
    cached_records.c.seq,
    cached_records.c.deleted,
    _TOMBSTONED_AT,
    cached_records.c.content_hash,
    cached_records.c.blob_key,
).where(
    cached_records.c.school_id == bindparam("school_id"),
    cached_records.c.area == bindparam("area"),
)
_STATES_OF_KEYS: Final = _STATES.where(
    cached_records.c.record_key.in_(bindparam("keys", expanding=True))
)


# Finding a record by its key cost about four times as much as reading it in a scan of its
# area (profiled on SQLite, a nightly delta that changes every pupil's attendance).  Only
# keys too many for one IN statement are worth a scan: the live count leaves out the
# area's tombstones, which the scan reads too.
_SEEK_OVER_SCAN: Final = 4


def record_states(
    conn: Connection,
    school_id: str,
    area: str,
    keys: Collection[str] | None = None,
    *,
    live_records: int | None = None,
) -> dict[str, RecordState]:
    """The state of the given records (every record of the area when `keys` is None).

    Given the area's count of `live_records`, many keys that are a large part of it are
    found in one scan of the area rather than one by one: the answer is the same.
    """
    where = {"school_id": school_id, "area": area}
    if keys is None:
        return _states(conn.execute(_STATES, where))
    many = len(keys) > _IN_CHUNK
    if many and live_records is not None and len(keys) * _SEEK_OVER_SCAN >= live_records:
        every = _states(conn.execute(_STATES, where))
        return {key: every[key] for key in keys if key in every}
    found: dict[str, RecordState] = {}
    for chunk in _chunks(sorted(keys)):
        found |= _states(conn.execute(_STATES_OF_KEYS, {**where, "keys": chunk}))
    return found


def _states(rows: Iterable[Any]) -> dict[str, RecordState]:
    # Unpacked by position: a row's attributes are looked up by name, each a call.
    return {
        key: RecordState(key, seq, deleted, changed_at, bytes(digest), blob_key)
        for key, seq, deleted, changed_at, digest, blob_key in rows
    }


def sealed_records(
    conn: Connection, school_id: str, area: str, keys: Collection[str]
) -> list[AnyRow]:
    """Rows (record_key, seq, ciphertext) of the given records."""
    columns = (cached_records.c.record_key, cached_records.c.seq, cached_records.c.ciphertext)
    rows: list[AnyRow] = []
    for chunk in _chunks(sorted(keys)):
        query = select(*columns).where(
            _in_area(school_id, area), cached_records.c.record_key.in_(chunk)
        )
        rows.extend(conn.execute(query))
    return rows


def all_records(conn: Connection, school_id: str, area: str) -> list[AnyRow]:
    """Every row of the area, tombstones included, as stored (for the cold bundle)."""
    query = select(cached_records).where(_in_area(school_id, area))
    return list(conn.execute(query))


# One `cached_records` row as the bulk writes take it: its values in the table's column
# order.  An upload builds one for each record it changes; as a dict each cost more to
# build and to take apart again (a key check, a lookup per column) than to bind (profiled).
RecordRow: TypeAlias = tuple[
    str, str, str, int, datetime, bool, datetime, bytes, bytes, "str | None"
]
RECORD_COLUMNS: Final = (
    "school_id",
    "area",
    "record_key",
    "seq",
    "changed_at",
    "deleted",
    "as_of",
    "content_hash",
    "ciphertext",
    "blob_key",
)
if tuple(c.name for c in cached_records.c) != RECORD_COLUMNS:  # a column added, or moved
    raise ImportError("cache.repository.RECORD_COLUMNS no longer matches cached_records")


def _as_params(row: RecordRow) -> dict[str, Any]:
    return dict(zip(RECORD_COLUMNS, row, strict=True))


def insert_records(conn: Connection, rows: Sequence[RecordRow]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _pg_copy(conn, rows)
        return
    if conn.dialect.name == "sqlite":
        _Bulk.of(conn, "insert").run(conn, rows)
        return
    conn.execute(insert(cached_records), [_as_params(row) for row in rows])


_BY_PK_NAMES: Final = ("k_school", "k_area", "k_record")  # bound to the row's first three
_BY_PK: Final = and_(
    cached_records.c.school_id == bindparam("k_school"),
    cached_records.c.area == bindparam("k_area"),
    cached_records.c.record_key == bindparam("k_record"),
)


def update_records(conn: Connection, rows: Sequence[RecordRow]) -> None:
    """Rewrite existing records, found by their primary key, with every other column."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _pg_bulk(conn, _PG_UPDATE_RECORDS, rows)
        return
    if conn.dialect.name == "sqlite":  # the same statement, its parameters bound in bulk
        _Bulk.of(conn, "update").run(conn, rows)
        return
    conn.execute(
        _UPDATE_RECORDS,
        [_as_params(row) | dict(zip(_BY_PK_NAMES, row, strict=False)) for row in rows],
    )


_UPDATABLE: Final = RECORD_COLUMNS[len(_BY_PK_NAMES) :]  # every column but the primary key's

_UPDATE_RECORDS: Final = (
    update(cached_records).where(_BY_PK).values({name: bindparam(name) for name in _UPDATABLE})
)


class _Bulk:
    """A statement compiled once for a dialect and sent with the DBAPI cursor's executemany,
    each parameter bound by its own type's processor (the dialect's: SQLite formats times
    itself), so the rows stored are exactly those SQLAlchemy would store.  SQLAlchemy's
    executemany builds its parameters row by row through its execution context: a third of
    a full upload's broker time on SQLite (profiled), more than the inserts themselves.
    A batch's rows share their times and names: each distinct object is bound once."""

    _compiled: ClassVar[dict[tuple[str, str], _Bulk]] = {}

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        if not compiled.positional or compiled.positiontup is None:
            raise TypeError(f"{dialect.name}: bulk statements need positional parameters")
        self.text: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup)
        # Where each parameter's value sits in a `RecordRow` (the key's are its first three).
        self.source = tuple(
            _BY_PK_NAMES.index(name) if name in _BY_PK_NAMES else RECORD_COLUMNS.index(name)
            for name in self.names
        )
        self.processors = tuple(
            None
            if _binds_bytes_as_they_are(compiled.binds[name].type, dialect)
            else compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self.names
        )

    @classmethod
    def of(cls, conn: Connection, kind: Literal["insert", "update"]) -> _Bulk:
        key = (conn.dialect.name, kind)
        found = cls._compiled.get(key)
        if found is None:
            statement = insert(cached_records) if kind == "insert" else _UPDATE_RECORDS
            found = cls._compiled[key] = cls(statement, conn.dialect)
        return found

    def run(self, conn: Connection, rows: Sequence[RecordRow]) -> None:
        values_of = operator.itemgetter(*self.source)  # one C call per row for the plain ones
        processed = [(i, p) for i, p in enumerate(self.processors) if p is not None]
        seen: list[Any] = [_UNSEEN] * len(self.names)
        bound: list[Any] = [None] * len(self.names)
        params: list[Any] = []
        for row in rows:
            values = values_of(row)
            if processed:
                values = list(values)
                for i, process in processed:
                    value = values[i]
                    if value is not None:
                        if value is not seen[i]:
                            seen[i], bound[i] = value, process(value)
                        values[i] = bound[i]
            params.append(values)
        dbapi: Any = conn.connection.dbapi_connection
        cursor = dbapi.cursor()
        try:
            cursor.executemany(self.text, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrapped(self.text, exc, conn) from exc
        finally:
            cursor.close()


_UNSEEN: Final = object()


def _binds_bytes_as_they_are(type_: Any, dialect: Any) -> bool:
    """sqlite3 stores `bytes` as a BLOB itself: SQLAlchemy's processor only wraps each value
    in `sqlite3.Binary` (a memoryview), which cost two objects per row and stores the same."""
    return dialect.name == "sqlite" and isinstance(type_, LargeBinary)


# PostgreSQL: a batch's rows as one JSON document per statement (json_to_recordset), not an
# executemany: psycopg runs that in pipeline mode, whose wait spins on the always-writable
# socket, and the server ran one UPDATE per record.  Bytes travel as hex, times as naive
# UTC (what UTCDateTime binds).
_PG_INSERT_RECORDS: Final = (
    "INSERT INTO cached_records (school_id, area, record_key, seq, changed_at, deleted,"
    " as_of, content_hash, ciphertext, blob_key)"
    " SELECT school_id, area, record_key, seq, changed_at, deleted, as_of,"
    " decode(content_hash, 'hex'), decode(ciphertext, 'hex'), blob_key"
    " FROM json_to_recordset(%s::json)"
    " AS v(school_id text, area text, record_key text, seq int8, changed_at timestamp,"
    " deleted bool, as_of timestamp, content_hash text, ciphertext text, blob_key text)"
)
# Updates as an upsert on the primary key: an UPDATE ... FROM the recordset left the index
# to the planner, which on a table not yet analysed (any new deployment, until autovacuum
# comes by) chose the (school, area, seq) index and scanned the whole area for every row:
# 0.41 s of server CPU for a 2,000-record delta, against 0.045 s through the arbiter index.
# The area is locked, so every row exists: the INSERT half never inserts.
_PG_UPDATE_RECORDS: Final = (
    _PG_INSERT_RECORDS
    + " ON CONFLICT (school_id, area, record_key) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _UPDATABLE)
)
_PG_BULK_ROWS: Final = 2000


def _pg_bulk(conn: Connection, statement: str, rows: Sequence[RecordRow]) -> None:
    for start in range(0, len(rows), _PG_BULK_ROWS):
        document = [_pg_record(row) for row in rows[start : start + _PG_BULK_ROWS]]
        conn.exec_driver_sql(statement, (orjson.dumps(document).decode(),))


# New rows go in with COPY: the server parses each row's text once, where the recordset's
# JSON was parsed, then hex-decoded, twice the bytes.  4,000 rows of 400 bytes, six runs
# each: 16.2 us of server CPU a row against 24.4, the broker's 8.4 against 8.1 (medians).
# An upload's inserts are all new keys of a locked area.  In the binary format, sealed
# bytes and times go as they are, not as hex and text: 20,000 rows of 400 bytes, four
# runs each, 8.0 us of server CPU a row against 9.5, the broker's 5.0 against 7.0.
_PG_COPY_RECORDS: Final = (
    f"COPY cached_records ({', '.join(RECORD_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)
# Each column's type as the binary format needs it named (the migrations' types).
_PG_COPY_TYPES: Final = (
    "varchar",  # school_id
    "varchar",  # area
    "varchar",  # record_key
    "int8",  # seq
    "timestamp",  # changed_at, naive UTC
    "bool",  # deleted
    "timestamp",  # as_of, naive UTC
    "bytea",  # content_hash
    "bytea",  # ciphertext
    "varchar",  # blob_key
)


def _pg_copy(conn: Connection, rows: Sequence[RecordRow]) -> None:
    naive: dict[datetime, datetime] = {}  # a batch's rows share their two times

    def utc(value: datetime) -> datetime:
        found = naive.get(value)
        if found is None:
            found = naive[value] = _naive_utc(value)
        return found

    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(_PG_COPY_RECORDS) as copy:
            copy.set_types(list(_PG_COPY_TYPES))
            write = copy.write_row
            for school, area, key, seq, changed_at, deleted, as_of, digest, sealed, blob in rows:
                write(
                    (
                        school,
                        area,
                        key,
                        seq,
                        utc(changed_at),
                        deleted,
                        utc(as_of),
                        digest,
                        sealed,
                        blob,
                    )
                )
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(_PG_COPY_RECORDS, exc, conn) from exc
    finally:
        cursor.close()


def _wrapped(statement: str, exc: Exception, conn: Connection) -> StatementError:
    """A driver's error from a statement sent past SQLAlchemy, as SQLAlchemy raises it
    (`OperationalError`, `IntegrityError`...), which is what callers catch and the API's
    handlers answer: a busy or vanished database is a 503, never a 500."""
    return DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error)


def _pg_record(row: RecordRow) -> dict[str, Any]:
    school, area, key, seq, changed_at, deleted, as_of, digest, sealed, blob = row
    return {
        "school_id": school,
        "area": area,
        "record_key": key,
        "seq": seq,
        "changed_at": _naive_utc(changed_at),
        "deleted": deleted,
        "as_of": _naive_utc(as_of),
        "content_hash": bytes(digest).hex(),
        "ciphertext": bytes(sealed).hex(),
        "blob_key": blob,
    }


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("UTCDateTime needs a timezone-aware datetime")
    return value.astimezone(UTC).replace(tzinfo=None)


def delete_records(conn: Connection, school_id: str, area: str, keys: Iterable[str]) -> None:
    for chunk in _chunks(sorted(keys)):
        conn.execute(
            delete(cached_records).where(
                _in_area(school_id, area), cached_records.c.record_key.in_(chunk)
            )
        )


_PAGE_COLUMNS: Final = (
    cached_records.c.record_key,
    cached_records.c.seq,
    cached_records.c.deleted,
    cached_records.c.ciphertext,
    cached_records.c.blob_key,
)


def page_by_key(
    conn: Connection, school_id: str, area: str, after_key: str | None, limit: int
) -> list[AnyRow]:
    """Live records in record_key order after `after_key` (keyset pagination on the PK)."""
    query = select(*_PAGE_COLUMNS).where(
        _in_area(school_id, area), cached_records.c.deleted.is_(False)
    )
    if after_key is not None:
        query = query.where(cached_records.c.record_key > after_key)
    query = query.order_by(cached_records.c.record_key).limit(limit)
    return list(conn.execute(query))


def page_by_seq(
    conn: Connection,
    school_id: str,
    area: str,
    *,
    changed_after: datetime,
    after_seq: int,
    upto_seq: int,
    limit: int,
) -> list[AnyRow]:
    """Records and tombstones changed after a time, in seq order within (after, upto]."""
    query = (
        select(*_PAGE_COLUMNS)
        .where(
            _in_area(school_id, area),
            cached_records.c.seq > after_seq,
            cached_records.c.seq <= upto_seq,
            cached_records.c.changed_at > changed_after,
        )
        .order_by(cached_records.c.seq)
        .limit(limit)
    )
    return list(conn.execute(query))


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
