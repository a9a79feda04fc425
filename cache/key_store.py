"""The SQL `DataKeyStore`: wrapped data keys in `data_keys`, shred tombstones beside them.

Each call is its own short transaction on the engine (never a request's session), so a key
created by one process is visible to every other at once and a failed request cannot roll
a key back.  `add` and `destroy` run SERIALIZABLE and retry on a serialization failure:
otherwise an `add` racing a `destroy` on PostgreSQL could each miss the other's write and
leave a live key behind a tombstone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, Row, delete, exists, insert, literal, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from cache.keys import DataKeyConflictError, KeyShreddedError, StoredDataKey, WrappedKey
from cache.models import data_keys, shredded_schools
from consent.sqltypes import UTCDateTime

_SERIALIZATION_FAILURE: Final = "40001"
_ATTEMPTS: Final = 8
T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SqlDataKeyStore:
    """Implements `cache.keys.DataKeyStore` on SQLite and PostgreSQL."""

    def __init__(self, engine: Engine, now: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._now = now  # only stamps created_at / shredded_at, for audit

    def get(self, school_id: str, version: int) -> StoredDataKey | None:
        query = select(data_keys).where(
            data_keys.c.school_id == school_id, data_keys.c.version == version
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _stored(row)

    def current(self, school_id: str) -> StoredDataKey | None:
        query = (
            select(data_keys)
            .where(data_keys.c.school_id == school_id)
            .order_by(data_keys.c.version.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _stored(row)

    def add(self, key: StoredDataKey) -> None:
        self._serializable(lambda conn: self._add(conn, key))

    def _add(self, conn: Connection, key: StoredDataKey) -> None:
        # Write first, check after: on SQLite a transaction that reads before it writes can
        # fail at once ("database is locked") when another writer committed in between.
        try:
            conn.execute(insert(data_keys).values(**_columns(key), created_at=self._now()))
        except IntegrityError:
            raise DataKeyConflictError(f"{key.school_id!r} v{key.version} exists") from None
        if _is_shredded(conn, key.school_id):
            raise KeyShreddedError(f"school {key.school_id!r} was shredded")

    def replace_wrapping(self, school_id: str, version: int, wrapped: WrappedKey) -> None:
        statement = (
            update(data_keys)
            .where(data_keys.c.school_id == school_id, data_keys.c.version == version)
            .values(kek_id=wrapped.kek_id, wrapped=wrapped.ciphertext)
        )
        with self._engine.begin() as conn:
            conn.execute(statement)

    def destroy(self, school_id: str) -> None:
        self._serializable(lambda conn: self._destroy(conn, school_id))

    def _destroy(self, conn: Connection, school_id: str) -> None:
        tombstone = select(literal(school_id), literal(self._now(), UTCDateTime())).where(
            ~exists().where(shredded_schools.c.school_id == school_id)
        )
        columns = ["school_id", "shredded_at"]
        conn.execute(insert(shredded_schools).from_select(columns, tombstone))
        conn.execute(delete(data_keys).where(data_keys.c.school_id == school_id))

    def is_shredded(self, school_id: str) -> bool:
        with self._engine.connect() as conn:
            return _is_shredded(conn, school_id)

    def versions(self, school_id: str) -> list[StoredDataKey]:
        query = (
            select(data_keys)
            .where(data_keys.c.school_id == school_id)
            .order_by(data_keys.c.version)
        )
        with self._engine.connect() as conn:
            return [_stored(row) for row in conn.execute(query)]

    def wrapped_by_other_kek(self, kek_id: str, *, limit: int) -> Sequence[StoredDataKey]:
        query = (
            select(data_keys)
            .where(data_keys.c.kek_id != kek_id)
            .order_by(data_keys.c.school_id, data_keys.c.version)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_stored(row) for row in conn.execute(query)]

    def _serializable(self, work: Callable[[Connection], T]) -> T:
        for attempt in range(_ATTEMPTS):
            try:
                with self._transaction() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if not _is_serialization_failure(exc) or attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._engine.connect() as plain:
            conn = plain.execution_options(isolation_level="SERIALIZABLE")
            with conn.begin():
                yield conn


def _is_serialization_failure(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == _SERIALIZATION_FAILURE


def _is_shredded(conn: Connection, school_id: str) -> bool:
    query = select(exists().where(shredded_schools.c.school_id == school_id))
    return bool(conn.execute(query).scalar())


def _columns(key: StoredDataKey) -> dict[str, Any]:
    return {
        "school_id": key.school_id,
        "version": key.version,
        "kek_id": key.wrapped.kek_id,
        "wrapped": key.wrapped.ciphertext,
    }


def _stored(row: Row[Any]) -> StoredDataKey:
    return StoredDataKey(row.school_id, row.version, WrappedKey(row.kek_id, bytes(row.wrapped)))
