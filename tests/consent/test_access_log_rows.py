"""Access-log rows written by hand-bound SQL are exactly what a plain Core insert stores.

`_Statements` applies each column's bind processor itself and runs the compiled INSERT
with `exec_driver_sql`; every value it stores must be byte-for-byte the one
`conn.execute(insert(access_log), rows)` would have stored, on both databases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, insert
from sqlmodel import Session, select

from broker.clock import FrozenClock
from broker.db import session_scope
from consent.access_log import AccessLogWriter, LogEntry, append_entries, verify
from consent.chain import genesis, link_hash
from consent.models import AccessLogRow, LogDecision
from tests.conftest import T0
from tests.support.consent_db import ConsentDb, consent_db

US = timedelta(microseconds=1)
PLUS_ONE = timezone(timedelta(hours=1))
COLUMNS = (
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
    "hash",
)


@pytest.fixture
def db(database_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[ConsentDb]:
    yield from consent_db(database_url, tmp_path, clock)


def log_entry(**kw: Any) -> LogEntry:
    fields: dict[str, Any] = {
        "school_id": "sch_a",
        "partner_id": "prt_1",
        "areas": ("students.basic",),
        "record_count": 3,
        "decision": "allowed",
        "reason": "granted",
        "request_id": "req-0001",
        "at": T0,
        "consent_id": "con_1",
    }
    fields.update(kw)
    return LogEntry(**fields)


# Every kind of value the inserter processes by hand: times with and without microseconds
# (and not in UTC), one and two areas, both decisions, no consent, two schools at once.
ENTRIES = (
    log_entry(at=T0),
    log_entry(at=T0 + 123_456 * US, request_id="req-0002", record_count=0),
    log_entry(
        areas=("students.basic", "contacts"),
        decision="denied",
        reason="no_consent",
        consent_id=None,
        record_count=0,
        request_id="req-0003",
        at=(T0 + 1 * US).astimezone(PLUS_ONE),
    ),
    log_entry(school_id="sch_b", areas=("contacts",), at=T0 + timedelta(seconds=59)),
    log_entry(
        school_id="sch_b",
        areas=("contacts", "students.basic"),
        decision="denied",
        reason="outside_window",
        consent_id=None,
        at=T0 + 999_999 * US,
        request_id="req-0005",
        record_count=0,
    ),
    log_entry(at=T0 + timedelta(days=40, microseconds=10), request_id="req-0006"),
    log_entry(reason="réservé ✓", request_id="req-ünïcode-\U0001f4da", at=T0 + 500_000 * US),
)


def raw_rows(engine: Engine) -> list[tuple[Any, ...]]:
    """Every stored value as the driver returns it, plus how the database holds it."""
    if engine.dialect.name == "sqlite":
        extra = ", ".join(f"typeof({c})" for c in COLUMNS)
    else:
        extra = "at::text, areas::text, pg_column_size(areas), octet_length(hash)"
    sql = f"SELECT {', '.join(COLUMNS)}, {extra} FROM access_log ORDER BY school_id, seq"
    with engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(sql)]


def reference_rows(db: ConsentDb, entries: Sequence[LogEntry]) -> list[dict[str, Any]]:
    """The rows for `entries`, as plain values, with seqs and hashes chained independently."""
    rows = []
    heads: dict[str, tuple[int, bytes]] = {}
    for entry in entries:
        key = db.keyring.key_for(entry.school_id)
        last, prev = heads.get(entry.school_id, (0, genesis(entry.school_id, key)))
        seq = last + 1
        digest = link_hash(prev, seq, entry.chained(), key)
        heads[entry.school_id] = (seq, digest)
        rows.append(
            {
                "school_id": entry.school_id,
                "seq": seq,
                "at": entry.at,
                "partner_id": entry.partner_id,
                "consent_id": entry.consent_id,
                "areas": list(entry.areas),
                "record_count": entry.record_count,
                "decision": LogDecision(entry.decision),
                "reason": entry.reason,
                "request_id": entry.request_id,
                "hash": digest,
            }
        )
    return rows


def by_append_entries(db: ConsentDb, entries: Sequence[LogEntry]) -> list[int]:
    with session_scope(db.engine) as session:
        return append_entries(session, entries, db.keyring.key_for)


async def by_writer(db: ConsentDb, entries: Sequence[LogEntry]) -> list[int]:
    """Through the group-committing writer, queued at once (so batched together)."""
    writer = AccessLogWriter(db.unit, db.keyring.key_for)
    await writer.start()
    try:
        return list(await asyncio.gather(*(writer.append(entry) for entry in entries)))
    finally:
        await writer.stop()


def assert_intact(db: ConsentDb, counts: dict[str, int]) -> None:
    with Session(db.engine) as session:
        for school_id, count in counts.items():
            report = verify(session, school_id, db.keyring.key_for(school_id))
            assert report.intact, report.breaks
            assert report.entries == count
            assert report.head_seq == count


def replace_with_plain_insert(db: ConsentDb, rows: list[dict[str, Any]]) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM access_log")
        conn.execute(insert(AccessLogRow.metadata.tables["access_log"]), rows)


COUNTS = {"sch_a": 5, "sch_b": 2}


def check_same_as_plain_insert(db: ConsentDb, seqs: list[int]) -> None:
    expected = reference_rows(db, ENTRIES)
    assert seqs == [row["seq"] for row in expected]
    assert_intact(db, COUNTS)
    written = raw_rows(db.engine)

    replace_with_plain_insert(db, expected)
    plain = raw_rows(db.engine)

    assert len(written) == len(ENTRIES)
    for mine, theirs in zip(written, plain, strict=True):
        assert mine == theirs
        assert [type(v) for v in mine] == [type(v) for v in theirs]
    assert_intact(db, COUNTS)  # what SQLAlchemy stores verifies too: the rows are one


def test_append_entries_stores_what_a_plain_insert_stores(db: ConsentDb) -> None:
    db.keyring.audit_key()
    check_same_as_plain_insert(db, by_append_entries(db, ENTRIES))


async def test_the_writer_stores_what_a_plain_insert_stores(db: ConsentDb) -> None:
    db.keyring.audit_key()
    check_same_as_plain_insert(db, await by_writer(db, ENTRIES))


def test_times_are_stored_in_utc_with_their_microseconds(db: ConsentDb) -> None:
    """Not only equal to SQLAlchemy's: the values themselves read back as written."""
    db.keyring.audit_key()
    by_append_entries(db, ENTRIES)
    with Session(db.engine) as session:
        stored = {
            (row.school_id, row.request_id): row for row in session.exec(select(AccessLogRow))
        }
    for entry in ENTRIES:
        row = stored[(entry.school_id, entry.request_id)]
        assert row.at == entry.at.astimezone(UTC)
        assert row.at.tzinfo is UTC
        assert list(row.areas) == sorted(entry.areas)
        assert LogDecision(row.decision).value == entry.decision
        assert row.consent_id == entry.consent_id


def test_a_whole_second_is_stored_in_the_databases_own_format(db: ConsentDb) -> None:
    db.keyring.audit_key()
    assert ENTRIES[0].at.microsecond == 0
    by_append_entries(db, ENTRIES[:1])
    with db.engine.connect() as conn:
        [(at,)] = conn.exec_driver_sql("SELECT CAST(at AS TEXT) FROM access_log").all()
    if db.engine.dialect.name == "sqlite":
        assert at == "2026-11-23 09:00:00.000000"
    else:
        assert at == "2026-11-23 09:00:00"


def test_a_postgresql_row_built_in_one_step_is_the_generic_one() -> None:
    """`_PgRows.entry_row` writes each column by name; it must give exactly what converting
    `_Statements.row` column by column gives, for every kind of entry."""
    from sqlalchemy import create_engine

    from consent.access_log import _pg_rows, _statements

    dialect = create_engine("postgresql+psycopg://", module=psycopg).dialect  # no connection
    sql, pg = _statements(dialect), _pg_rows()
    entries = (
        *ENTRIES,
        log_entry(fields=("upn", "forename"), request_id="req-0007"),
        log_entry(fields=(), operation="write", request_id="req-0008"),
        log_entry(areas=("a", "b", "c"), fields=("x",), decision="denied", consent_id=None),
    )
    for seq, one in enumerate(entries * 2, start=1):  # again: from the memos this time
        digest = bytes([seq]) * 32
        generic = sql.row(one, seq, digest)
        assert isinstance(generic, dict)
        assert pg.entry_row(sql, one, seq, digest) == pg.row(generic)
