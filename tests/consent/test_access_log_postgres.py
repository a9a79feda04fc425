"""The access log's group commit on a real PostgreSQL: a batch of many entries is a fixed
number of statements (one per school, one for every row; a single autocommitted one when
the writer knows the heads), concurrent group commits keep every school's chain whole, and
a connection the server dropped costs no read and writes no entry twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from broker.clock import FrozenClock
from broker.db import make_engine, session_scope
from consent.access_log import AccessLogWriter, LogEntry, append_entries, count_entries, verify
from tests.support.consent_db import SCHOOLS, ConsentDb, consent_db

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

S = timedelta(seconds=1)


@pytest.fixture
def db(database_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[ConsentDb]:
    yield from consent_db(database_url, tmp_path, clock)


def entry(db: ConsentDb, n: int, school: str = "sch_a") -> LogEntry:
    return LogEntry(
        school_id=school,
        partner_id="prt_1",
        areas=("students.basic", "students.contacts"),
        record_count=n,
        decision="allowed",
        reason="granted",
        request_id=f"req-{n:06d}",
        at=db.clock.now() + n * S,
        consent_id="con_1",
    )


class Statements:
    """Every statement the server receives through an engine's connections (an executemany
    counts once per row: the server runs each), by psycopg's own cursors."""

    def __init__(self, engine: Engine) -> None:
        self.sent: list[str] = []
        sent = self.sent

        class Counting(psycopg.Cursor[Any]):
            def execute(self, query: Any, *args: Any, **kw: Any) -> Any:
                sent.append(str(query).lstrip().upper())
                return super().execute(query, *args, **kw)

            def executemany(self, query: Any, params_seq: Any, **kw: Any) -> Any:
                params = list(params_seq)
                sent.extend([str(query).lstrip().upper()] * len(params))
                return super().executemany(query, params, **kw)

        @event.listens_for(engine, "connect")
        def _counting(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.cursor_factory = Counting

    def clear(self) -> None:
        self.sent.clear()

    def inserting_rows(self) -> list[str]:
        return [s for s in self.sent if "INSERT INTO ACCESS_LOG " in s]


async def test_a_group_commit_of_many_entries_is_one_statement_for_all_its_rows(
    db: ConsentDb, database_url: str
) -> None:
    db.keyring.audit_key()
    engine = make_engine(database_url, pre_ping=False)
    statements = Statements(engine)
    units = 0

    def unit() -> Any:
        nonlocal units
        units += 1
        return session_scope(engine)

    with session_scope(db.engine) as session:  # heads this writer has never seen
        append_entries(session, [entry(db, 0, school) for school in SCHOOLS], db.keyring.key_for)
    writer = AccessLogWriter(unit, db.keyring.key_for, linger=60.0, linger_batch=60)
    await writer.start()

    async def sixty(first: int) -> list[int]:
        # 60 reads at once: the writer lingers until all 60 have queued, then writes them.
        batch = [entry(db, n, SCHOOLS[n % 3]) for n in range(first, first + 60)]
        return await asyncio.wait_for(
            asyncio.gather(*(writer.append(e) for e in batch)), timeout=120
        )

    try:
        first = await sixty(1)
        # Heads it does not know: one transaction, each school's head locked by one
        # UPDATE taking all of its seqs, then one statement for every row and head.
        assert units == 1
        reserves = [s for s in statements.sent if s.startswith("UPDATE ACCESS_LOG_HEADS")]
        assert len(reserves) == len(SCHOOLS)
        assert len(statements.inserting_rows()) == 1
        assert len(statements.sent) == len(SCHOOLS) + 1
        statements.clear()
        units = 0
        second = await sixty(61)
        # Heads it left itself: one autocommitted statement moves them and inserts the
        # rows, one round trip in all, and no transaction of the locking path.
        assert units == 0
        assert len(statements.sent) == 1
        assert "INSERT INTO ACCESS_LOG " in statements.sent[0]
        # On a connection of its own, out of the pool: the pool's are as they were.
        held = writer._fast.dbapi_connection
        assert held.autocommit is True
        with engine.connect() as conn:
            assert conn.connection.driver_connection is not held
            assert conn.connection.driver_connection.autocommit is False  # type: ignore[union-attr]
        statements.clear()
        assert len(await sixty(121)) == 60
        assert len(statements.sent) == 1  # the same connection, still one statement
        assert writer._fast.dbapi_connection is held
    finally:
        await writer.stop()
        engine.dispose()
    assert held.closed  # stopping closed it
    assert sorted(first) == sorted(n for n in range(2, 22) for _ in SCHOOLS)
    assert sorted(second) == sorted(n for n in range(22, 42) for _ in SCHOOLS)
    with Session(db.engine) as session:
        for school in SCHOOLS:
            report = verify(session, school, db.keyring.key_for(school))
            assert (report.entries, report.head_seq, report.breaks) == (61, 61, [])


async def test_a_head_moved_by_another_writer_goes_through_the_lock(
    db: ConsentDb, database_url: str
) -> None:
    """The fast path moves a head only from where this writer left it: after a worker's
    append it moves nothing, and the locking path chains from the real head."""
    db.keyring.audit_key()
    engine = make_engine(database_url, pre_ping=False)
    statements = Statements(engine)
    writer = AccessLogWriter(partial(session_scope, engine), db.keyring.key_for)
    await writer.start()
    try:
        assert await writer.append(entry(db, 1)) == 1
        assert await writer.append(entry(db, 2)) == 2  # the fast path: its own head
        with session_scope(db.engine) as session:  # a worker appends in its transaction
            assert append_entries(session, [entry(db, 3)], db.keyring.key_for) == [3]
        statements.clear()
        assert await writer.append(entry(db, 4)) == 4
        # Tried from seq 2, moved nothing; then reserved under the lock and written.
        assert [s.split()[0] for s in statements.sent] == ["WITH", "UPDATE", "WITH"]
        statements.clear()
        assert await writer.append(entry(db, 5)) == 5
        assert len(statements.sent) == 1  # its own head again
    finally:
        await writer.stop()
        engine.dispose()
    with Session(db.engine) as session:
        report = verify(session, "sch_a", db.keyring.key_for("sch_a"))
        assert (report.entries, report.head_seq, report.breaks) == (5, 5, [])


async def test_a_connection_lost_after_the_fast_path_committed_writes_nothing_twice(
    db: ConsentDb, database_url: str
) -> None:
    """In doubt (the connection died with the statement sent), the writer asks the rows:
    a batch that committed is reported as written, not written again."""
    db.keyring.audit_key()
    engine = make_engine(database_url, pre_ping=False)
    lose_after_commit = False

    class LosingAfterCommit(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kw: Any) -> Any:
            result = super().execute(query, *args, **kw)
            if lose_after_commit and str(query).startswith("WITH want"):
                self.connection.close()  # committed (autocommit), then the line drops
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return result

    @event.listens_for(engine, "connect")
    def _losing(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.cursor_factory = LosingAfterCommit

    writer = AccessLogWriter(partial(session_scope, engine), db.keyring.key_for)
    await writer.start()
    try:
        assert await writer.append(entry(db, 1)) == 1
        lose_after_commit = True
        assert await writer.append(entry(db, 2)) == 2
        lose_after_commit = False
        assert await writer.append(entry(db, 3)) == 3
    finally:
        await writer.stop()
        engine.dispose()
    with Session(db.engine) as session:
        assert count_entries(session, "sch_a") == 3
        report = verify(session, "sch_a", db.keyring.key_for("sch_a"))
        assert (report.entries, report.head_seq, report.breaks) == (3, 3, [])


async def test_concurrent_group_commits_keep_every_chain_whole(
    db: ConsentDb, database_url: str
) -> None:
    """Two API processes' writers (their own pools) and a worker appending in its own
    transactions, all at once on the same schools: gapless, chained, heads in step."""
    db.keyring.audit_key()
    engines = [make_engine(database_url, pre_ping=False) for _ in range(2)]
    statements = [Statements(engine) for engine in engines]
    writers = [
        AccessLogWriter(partial(session_scope, engine), db.keyring.key_for, linger=0.002)
        for engine in engines
    ]
    for writer in writers:
        await writer.start()

    async def reader(r: int) -> list[tuple[str, int]]:
        out = []
        for k in range(12):
            n = r * 12 + k
            school = SCHOOLS[(r + k) % 3]
            out.append((school, await writers[r % 2].append(entry(db, n, school))))
        return out

    def worker(w: int) -> list[tuple[str, int]]:  # the generic path, in a caller's transaction
        out = []
        for k in range(10):
            batch = [entry(db, 10_000 + w * 100 + k * 3 + j, SCHOOLS[(w + j) % 3]) for j in (0, 1)]
            with session_scope(db.engine) as session:
                seqs = append_entries(session, batch, db.keyring.key_for)
            out += [(e.school_id, s) for e, s in zip(batch, seqs, strict=True)]
        return out

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(reader(r) for r in range(24)),
                    *(loop.run_in_executor(pool, worker, w) for w in range(2)),
                ),
                timeout=300,
            )
        finally:
            for writer in writers:
                await writer.stop()
            for engine in engines:
                engine.dispose()
    written = [pair for result in results for pair in result]
    assert len(written) == 24 * 12 + 2 * 10 * 2
    per_school = Counter(school for school, _ in written)
    with Session(db.engine) as session:
        for school in SCHOOLS:
            mine = sorted(seq for s, seq in written if s == school)
            assert mine == list(range(1, per_school[school] + 1))  # no gap, no seq twice
            report = verify(session, school, db.keyring.key_for(school))
            assert (report.entries, report.head_seq, report.breaks) == (len(mine), len(mine), [])
    # The readers' entries went in group commits: far fewer row statements than entries.
    assert sum(len(s.inserting_rows()) for s in statements) < 24 * 12 / 2


async def test_a_pooled_connection_the_server_dropped_costs_no_read(
    db: ConsentDb, database_url: str
) -> None:
    """The writer's pool does not ping (a round trip per batch): a connection found dead
    before the batch commits is replaced and the batch written once, not failed."""
    db.keyring.audit_key()
    engine = make_engine(database_url, pre_ping=False, pool_size=1, max_overflow=0)
    writer = AccessLogWriter(lambda: session_scope(engine), db.keyring.key_for)
    await writer.start()
    try:
        assert await writer.append(entry(db, 1)) == 1
        with engine.connect() as conn:  # the writer's one pooled connection
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with db.engine.connect() as admin:
            assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend}).one()[0]
        assert await writer.append(entry(db, 2)) == 2
    finally:
        await writer.stop()
        engine.dispose()
    with Session(db.engine) as session:
        assert count_entries(session, "sch_a") == 2
        report = verify(session, "sch_a", db.keyring.key_for("sch_a"))
        assert (report.entries, report.breaks) == (2, [])


async def test_a_group_commit_stores_every_column_as_the_generic_path_does(
    db: ConsentDb, database_url: str
) -> None:
    """The batched statement is built from the table's columns: each value must come back
    as the ORM-free generic path (`append_entries`) stores it, awkward text included."""
    db.keyring.audit_key()

    def entries(school: str) -> list[LogEntry]:
        odd = 'quote " back\\slash \u00e9 \u2603 \U0001f600 {"json": [1]}'
        return [
            LogEntry(
                school_id=school,
                partner_id="prt_1",
                areas=("students.basic", "attendance.marks"),
                record_count=n,
                decision="allowed" if n % 2 else "denied",
                reason="granted" if n % 2 else odd[:64],
                request_id=f"req-{n}-{odd}",
                at=db.clock.now() + n * S + n * timedelta(microseconds=7),
                consent_id=None if n % 3 == 0 else "con_1",
            )
            for n in range(1, 7)
        ]

    with session_scope(db.engine) as session:
        append_entries(session, entries("sch_a"), db.keyring.key_for)
    writer = AccessLogWriter(
        partial(session_scope, db.engine), db.keyring.key_for, linger=60.0, linger_batch=6
    )
    await writer.start()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(writer.append(e) for e in entries("sch_b"))), timeout=120
        )
    finally:
        await writer.stop()
    query = text("SELECT * FROM access_log WHERE school_id = :school ORDER BY seq")
    with db.engine.connect() as conn:
        generic = [dict(r._mapping) for r in conn.execute(query, {"school": "sch_a"})]
        batched = [dict(r._mapping) for r in conn.execute(query, {"school": "sch_b"})]
    assert len(generic) == len(batched) == 6
    for one, other in zip(generic, batched, strict=True):
        assert {k: v for k, v in one.items() if k not in ("school_id", "hash")} == {
            k: v for k, v in other.items() if k not in ("school_id", "hash")
        }
    with Session(db.engine) as session:
        for school in ("sch_a", "sch_b"):
            report = verify(session, school, db.keyring.key_for(school))
            assert (report.entries, report.breaks) == (6, [])


async def test_the_fast_paths_own_connection_dropped_between_batches_costs_no_read(
    db: ConsentDb, database_url: str
) -> None:
    """The fast path keeps its connection between batches: found dead, it is in doubt (the
    rows say nothing was written), replaced, and the batch written once."""
    db.keyring.audit_key()
    engine = make_engine(database_url, pre_ping=False)
    writer = AccessLogWriter(partial(session_scope, engine), db.keyring.key_for)
    await writer.start()
    try:
        assert await writer.append(entry(db, 1)) == 1  # the locking path
        assert await writer.append(entry(db, 2)) == 2  # the fast path, on its own connection
        held = writer._fast.dbapi_connection
        with db.engine.connect() as admin:
            assert admin.execute(
                text("SELECT pg_terminate_backend(:p)"), {"p": held.info.backend_pid}
            ).one()[0]
        assert await writer.append(entry(db, 3)) == 3
        assert await writer.append(entry(db, 4)) == 4
        assert writer._fast.dbapi_connection is not held
    finally:
        await writer.stop()
        engine.dispose()
    with Session(db.engine) as session:
        assert count_entries(session, "sch_a") == 4
        report = verify(session, "sch_a", db.keyring.key_for("sch_a"))
        assert (report.entries, report.head_seq, report.breaks) == (4, 4, [])
