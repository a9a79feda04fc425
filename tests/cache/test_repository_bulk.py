"""The cache's bulk writes store exactly what SQLAlchemy's own statements store: rows
written both ways read back identical, as raw column values and through the ORM types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.exc import IntegrityError

from cache import repository as repo
from cache.models import cached_areas, cached_records

LONDON_SUMMER = timezone(timedelta(hours=1))


def rows(school: str, version: int) -> list[repo.RecordRow]:
    at = datetime(2026, 6, 1, 9, 30, 15, 123456, tzinfo=LONDON_SUMMER)
    return [
        (
            school,
            "students.photos",
            f"rk-{n:03d}",
            version * 100 + n,
            at + timedelta(microseconds=n),
            n % 3 == 0,
            datetime(2026, 6, 1, 8, 0, tzinfo=UTC),
            bytes([n, version]) * 16,
            b"\x00\xffsealed" * (n + 1),
            None if n % 2 else f"pfx/pack-{n}#0:{n}",
        )
        for n in range(1, 9)
    ]


def as_dicts(records: list[repo.RecordRow]) -> list[dict[str, Any]]:
    """The same rows as SQLAlchemy's own statements take them."""
    return [dict(zip(repo.RECORD_COLUMNS, row, strict=True)) for row in records]


def stored(engine: Engine, school: str) -> list[tuple[Any, ...]]:
    query = text(
        "SELECT record_key, seq, changed_at, deleted, as_of, content_hash, ciphertext, blob_key"
        " FROM cached_records WHERE school_id = :school ORDER BY record_key"
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query, {"school": school})]


@contextmanager
def statements_sent(engine: Engine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_bulk_inserts_and_updates_store_what_sqlalchemy_stores(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(cached_records), as_dicts(rows("sch_generic", 1)))
        repo.insert_records(conn, rows("sch_bulk", 1))
    assert stored(engine, "sch_bulk") == stored(engine, "sch_generic")
    with engine.begin() as conn:
        conn.execute(
            repo._UPDATE_RECORDS,
            [
                {**r, "k_school": r["school_id"], "k_area": r["area"], "k_record": r["record_key"]}
                for r in as_dicts(rows("sch_generic", 2))
            ],
        )
        repo.update_records(conn, rows("sch_bulk", 2))
    assert stored(engine, "sch_bulk") == stored(engine, "sch_generic")
    assert [r[1] for r in stored(engine, "sch_bulk")] == list(range(201, 209))
    with engine.connect() as conn:  # and through the ORM types: aware UTC times
        states = repo.record_states(conn, "sch_bulk", "students.photos")
        asked = repo.record_states(conn, "sch_bulk", "students.photos", {"rk-001", "rk-003", "x"})
        # Keys that are a large part of the area are found by a scan: the same answer.
        many = {"rk-001", "rk-003", *(f"absent-{n}" for n in range(1000))}
        sought = repo.record_states(conn, "sch_bulk", "students.photos", many)
        with statements_sent(engine) as sent:
            scanned = repo.record_states(
                conn, "sch_bulk", "students.photos", many, live_records=1000
            )
            few = repo.record_states(
                conn, "sch_bulk", "students.photos", {"rk-001", "rk-003", "x"}, live_records=8
            )
            small_part = repo.record_states(
                conn, "sch_bulk", "students.photos", many, live_records=5000
            )
    # Many keys, a large part of the area: one scan.  Few keys, or a small part: by key.
    assert [" IN " in statement for statement in sent] == [False, True, True, True]
    assert asked == {key: states[key] for key in ("rk-001", "rk-003")}
    assert scanned == sought == small_part == few == asked
    assert len(states) == 8
    # A tombstone's change time, as the ORM types read it (aware UTC); a live record's is
    # never asked, and not read.
    tombstoned_at = states["rk-003"].changed_at
    assert states["rk-003"].deleted
    assert tombstoned_at == rows("x", 2)[2][repo.RECORD_COLUMNS.index("changed_at")]
    assert tombstoned_at is not None
    assert tombstoned_at.tzinfo is not None
    assert not states["rk-001"].deleted
    assert states["rk-001"].changed_at is None
    digest = rows("x", 2)[0][repo.RECORD_COLUMNS.index("content_hash")]
    assert states["rk-001"].content_hash == digest


def test_updates_on_postgresql_find_rows_by_primary_key_whatever_the_statistics(
    engine: Engine,
) -> None:
    """On a table never analysed (a new deployment, until autovacuum comes by) PostgreSQL's
    planner joined an UPDATE ... FROM to the (school, area, seq) index and scanned the
    whole area per row.  The upsert's arbiter is the primary key by definition."""
    if engine.dialect.name == "sqlite":  # one UPDATE per row, by its primary key
        with engine.connect() as conn:
            bulk = repo._Bulk.of(conn, "update")
            params = [None] * len(bulk.names)
            plan = " ".join(
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + bulk.text, tuple(params))
            )
        assert "record_key=?" in plan, plan
        assert "ix_cached_records_seq" not in plan, plan
        return
    with engine.begin() as conn:
        repo.insert_records(conn, rows("sch_plan", 1))
        document = [repo._pg_record(row) for row in rows("sch_plan", 2)]
        plan = "\n".join(
            line
            for (line,) in conn.exec_driver_sql(
                "EXPLAIN " + repo._PG_UPDATE_RECORDS, (orjson.dumps(document).decode(),)
            )
        )
    assert "Conflict Arbiter Indexes: cached_records_pkey" in plan, plan
    assert "ix_cached_records_seq" not in plan, plan


def test_a_failed_bulk_insert_raises_as_sqlalchemy_does(engine: Engine) -> None:
    """The bulk paths send their statements past SQLAlchemy (executemany, COPY): a driver's
    error still arrives as SQLAlchemy's, which the API's handlers answer (a busy or vanished
    database is a 503), and the transaction is rolled back whole."""
    with engine.begin() as conn:
        repo.insert_records(conn, rows("sch_twice", 1))

    def insert_new_then_again() -> None:
        with engine.begin() as conn:
            repo.insert_records(conn, rows("sch_new", 1))
            repo.insert_records(conn, rows("sch_twice", 1))

    with pytest.raises(IntegrityError):
        insert_new_then_again()
    assert stored(engine, "sch_new") == []
    assert len(stored(engine, "sch_twice")) == len(rows("x", 1))


def test_an_area_row_is_updated_with_plain_values_only(engine: Engine) -> None:
    """`update_area`'s statements are built once per set of columns, with bound values: an
    SQL expression is refused, not bound as if it were a value."""
    with engine.begin() as conn, pytest.raises(TypeError, match="plain values"):
        repo.update_area(conn, "sch_x", "students.basic", tier=cached_areas.c.tier)
