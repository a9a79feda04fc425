"""The access log on SQLite and PostgreSQL: group commit, failures, reading, export, tampering."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import Session

from broker.clock import FrozenClock
from broker.db import make_engine, session_scope
from consent import access_log
from consent.access_log import (
    AccessLogWriter,
    LogEntry,
    LogFilter,
    append_entries,
    csv_lines,
    csv_safe,
    list_entries,
    verify,
)
from consent.chain import genesis, link_hash
from consent.errors import AccessLogWriteError, ConsentInvalidError
from consent.models import AccessLogRow
from tests.support.consent_db import SCHOOLS, ConsentDb, consent_db

S = timedelta(seconds=1)


@pytest.fixture
def db(database_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[ConsentDb]:
    yield from consent_db(database_url, tmp_path, clock)


def entry(db: ConsentDb, n: int = 0, school: str = "sch_a", **kw: object) -> LogEntry:
    fields: dict[str, object] = {
        "school_id": school,
        "partner_id": "prt_1",
        "areas": ("students.basic",),
        "record_count": n,
        "decision": "allowed",
        "reason": "granted",
        "request_id": f"req-{n:06d}",
        "at": db.clock.now() + n * S,
        "consent_id": "con_1",
    }
    fields.update(kw)
    return LogEntry(**fields)  # type: ignore[arg-type]


class CountingUnit:
    """session_scope that counts transactions: group commit must need fewer than entries."""

    def __init__(self, db: ConsentDb) -> None:
        self.db = db
        self.transactions = 0

    def __call__(self) -> AbstractContextManager[Session]:
        self.transactions += 1
        return session_scope(self.db.engine)


class CountingBatches:
    transactions = 0  # the writer's batches


def stored(db: ConsentDb, school: str) -> list[AccessLogRow]:
    with Session(db.engine) as session:
        return list_entries(session, school, LogFilter(), limit=1000).entries


async def test_concurrent_appends_are_gapless_per_school_and_group_committed(
    db: ConsentDb,
) -> None:
    db.keyring.audit_key()
    unit = CountingUnit(db)
    writer = AccessLogWriter(unit, db.keyring.key_for)
    await writer.start()
    try:
        entries = [entry(db, n, school=SCHOOLS[n % 3]) for n in range(200)]
        seqs = await asyncio.gather(*(writer.append(e) for e in entries))
    finally:
        await writer.stop()
    per_school = Counter(e.school_id for e in entries)
    for school in SCHOOLS:
        mine = sorted(s for s, e in zip(seqs, entries, strict=True) if e.school_id == school)
        assert mine == list(range(1, per_school[school] + 1))
        with Session(db.engine) as session:
            report = verify(session, school, db.keyring.key_for(school))
        assert report.intact, report.breaks
        assert report.entries == per_school[school]
    assert unit.transactions < 200 / 4


async def test_two_writers_with_their_own_connections_share_one_chain(
    db: ConsentDb, database_url: str
) -> None:
    db.keyring.audit_key()
    other = make_engine(database_url)
    writers = [
        AccessLogWriter(lambda: session_scope(db.engine), db.keyring.key_for),
        AccessLogWriter(lambda: session_scope(other), db.keyring.key_for),
    ]
    for writer in writers:
        await writer.start()
    try:
        await asyncio.gather(*(writers[n % 2].append(entry(db, n)) for n in range(100)))
    finally:
        for writer in writers:
            await writer.stop()
        other.dispose()
    with Session(db.engine) as session:
        report = verify(session, "sch_a", db.keyring.key_for("sch_a"))
    assert (report.entries, report.breaks) == (100, [])


async def test_an_entry_that_cannot_be_written_fails_its_read(db: ConsentDb) -> None:
    db.keyring.audit_key()
    writer = AccessLogWriter(lambda: session_scope(db.engine), db.keyring.key_for)
    await writer.start()
    try:
        assert await writer.append(entry(db, 1)) == 1
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE access_log"))
        with pytest.raises(AccessLogWriteError, match="could not be written"):
            await writer.append(entry(db, 2))
    finally:
        await writer.stop()
    with pytest.raises(AccessLogWriteError, match="not accepting"):
        await writer.append(entry(db, 3))


async def test_stop_writes_everything_queued_then_refuses_and_the_writer_restarts(
    db: ConsentDb,
) -> None:
    db.keyring.audit_key()
    writer = AccessLogWriter(
        lambda: session_scope(db.engine), db.keyring.key_for, max_batch=3, linger=5.0
    )
    await writer.start()
    queued = [asyncio.ensure_future(writer.append(entry(db, n))) for n in range(10)]
    await asyncio.sleep(0)  # every append has queued its entry (more than a batch holds)
    await writer.stop()
    assert [q.result() for q in queued] == list(range(1, 11))
    assert not writer.running
    with pytest.raises(AccessLogWriteError, match="not accepting"):
        await writer.append(entry(db, 10))
    await writer.start()
    try:
        assert await writer.append(entry(db, 11)) == 11
    finally:
        await writer.stop()
    with Session(db.engine) as session:
        report = verify(session, "sch_a", db.keyring.key_for("sch_a"))
    assert (report.entries, report.breaks) == (11, [])


def test_a_malformed_entry_is_refused_before_it_is_queued(db: ConsentDb) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        entry(db, at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="allowed or denied"):
        entry(db, decision="maybe")


def test_append_now_joins_the_callers_transaction(db: ConsentDb) -> None:
    writer = AccessLogWriter(lambda: session_scope(db.engine), db.keyring.key_for)
    db.keyring.audit_key()

    def read_that_fails_after_logging() -> None:
        with session_scope(db.engine) as session:
            assert writer.append_now(session, entry(db, 1)) == 1
            raise RuntimeError("the read failed after all")

    with pytest.raises(RuntimeError):
        read_that_fails_after_logging()
    assert stored(db, "sch_a") == []
    with session_scope(db.engine) as session:
        assert writer.append_now(session, entry(db, 1)) == 1


def test_filters_newest_first_and_pages(db: ConsentDb) -> None:
    with session_scope(db.engine) as session:
        append_entries(
            session,
            [entry(db, n, partner_id="prt_2" if n % 2 else "prt_1") for n in range(10)],
            db.keyring.key_for,
        )
    start = db.clock.now()
    with Session(db.engine) as session:
        everything = list_entries(session, "sch_a", LogFilter(), limit=4)
        assert [r.seq for r in everything.entries] == [10, 9, 8, 7]
        assert everything.next_cursor is not None
        rest = list_entries(session, "sch_a", LogFilter(), limit=4, cursor=everything.next_cursor)
        assert [r.seq for r in rest.entries] == [6, 5, 4, 3]
        window = LogFilter(since=start + 2 * S, until=start + 6 * S, partner_id="prt_1")
        assert [r.record_count for r in list_entries(session, "sch_a", window).entries] == [4, 2]
        assert list_entries(session, "sch_b", LogFilter()).entries == []
        with pytest.raises(ConsentInvalidError, match="cursor"):
            list_entries(session, "sch_a", LogFilter(), cursor="not-a-cursor")


def test_csv_is_rfc4180_and_defuses_formulas(db: ConsentDb) -> None:
    with session_scope(db.engine) as session:
        append_entries(
            session,
            [
                entry(db, 1, reason='in_grace, "quoted"'),
                entry(db, 2, request_id="=HYPERLINK(1)", areas=("contacts", "groups")),
            ],
            db.keyring.key_for,
        )
    text_out = "".join(csv_lines(stored(db, "sch_a")))
    assert text_out.startswith(
        "seq,at,partner_id,consent_id,areas,record_count,decision,reason,request_id,hash,"
        "operation,fields\r\n"
    )
    assert '"in_grace, ""quoted"""' in text_out
    rows = list(csv.DictReader(io.StringIO(text_out)))
    assert [r["seq"] for r in rows] == ["2", "1"]
    assert rows[0]["request_id"] == "'=HYPERLINK(1)"
    assert rows[0]["areas"] == "contacts;groups"
    assert rows[1]["at"] == "2026-11-23T09:00:01Z"
    assert [csv_safe(v) for v in ("+1", "-1", "@x", "ok")] == ["'+1", "'-1", "'@x", "ok"]


def test_verify_names_each_kind_of_tampering(db: ConsentDb) -> None:
    with session_scope(db.engine) as session:
        append_entries(session, [entry(db, n) for n in range(1, 9)], db.keyring.key_for)
    key = db.keyring.key_for("sch_a")
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE access_log SET record_count = 999 WHERE seq = 2"))
        conn.execute(text("DELETE FROM access_log WHERE seq = 5"))
        conn.execute(text("DELETE FROM access_log WHERE seq >= 7"))
    with Session(db.engine) as session:
        breaks = verify(session, "sch_a", key).breaks
    assert [(b.seq, b.kind) for b in breaks] == [(2, "altered"), (5, "gap"), (7, "truncated")]


def test_a_chain_rewritten_without_the_key_does_not_verify(db: ConsentDb) -> None:
    with session_scope(db.engine) as session:
        append_entries(session, [entry(db, n) for n in range(1, 4)], db.keyring.key_for)
    # Someone with database access but no KEK rewrites entry 2 and every hash after it,
    # with plain SHA-256 since the HMAC key is out of reach, and fixes up the head too.
    rows = stored(db, "sch_a")[::-1]
    from consent.access_log import row_entry

    prev = genesis("sch_a")
    with db.engine.begin() as conn:
        for row in rows:
            fields = row_entry(row) | ({"record_count": 0} if row.seq == 2 else {})
            prev = link_hash(prev, row.seq, fields)
            conn.execute(
                text("UPDATE access_log SET record_count = :n, hash = :h WHERE seq = :s"),
                {"n": fields["record_count"], "h": prev, "s": row.seq},
            )
        conn.execute(text("UPDATE access_log_heads SET last_hash = :h"), {"h": prev})
    with Session(db.engine) as session:
        report = verify(session, "sch_a", db.keyring.key_for("sch_a"))
    assert [b.seq for b in report.breaks if b.kind == "altered"] == [1, 2, 3]


def test_the_audit_key_is_sealed_and_made_once(db: ConsentDb) -> None:
    from consent.audit_keys import AuditKeyring

    key = db.keyring.audit_key()
    again = AuditKeyring(lambda: session_scope(db.engine), db.sealer, db.clock.now)
    assert again.audit_key() == key
    with db.engine.connect() as conn:
        sealed = conn.execute(text("SELECT key_sealed FROM audit_keys")).scalar_one()
    assert key not in bytes(sealed)
    assert db.keyring.key_for("sch_a") != db.keyring.key_for("sch_b")


# ---------------------------------------------------------------------------------------
# Batches: one seq reservation per school, lingering for more, failing whole


def statements(db: ConsentDb, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement sent from now on, through the engine or the append's own DBAPI
    cursor (executemany counts once)."""
    sent: list[str] = []

    def record(*args: object) -> None:
        sent.append(str(args[2]).lstrip().upper())  # (conn, cursor, statement, ...)

    event.listen(db.engine, "before_cursor_execute", record)
    real_cursor = access_log._cursor

    class Recording:
        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor

        def execute(self, statement: str, *args: Any) -> Any:
            sent.append(statement.lstrip().upper())
            return self._cursor.execute(statement, *args)

        def executemany(self, statement: str, *args: Any) -> Any:
            sent.append(statement.lstrip().upper())
            return self._cursor.executemany(statement, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cursor, name)

    monkeypatch.setattr(access_log, "_cursor", lambda conn: Recording(real_cursor(conn)))
    return sent


def test_a_batch_reserves_each_schools_seqs_with_one_update(
    db: ConsentDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.keyring.audit_key()
    with session_scope(db.engine) as session:
        append_entries(session, [entry(db, 0, school=s) for s in SCHOOLS], db.keyring.key_for)
    sent = statements(db, monkeypatch)
    batch = [entry(db, n, school=SCHOOLS[n % 3]) for n in range(1, 10)]  # interleaved
    with session_scope(db.engine) as session:
        seqs = append_entries(session, batch, db.keyring.key_for)
    assert seqs == [2, 2, 2, 3, 3, 3, 4, 4, 4]
    dml = [s for s in sent if s.startswith(("UPDATE", "INSERT"))]
    reserves = [s for s in dml if "LAST_SEQ" in s and "RETURNING" in s]
    assert len(reserves) == 3  # one per school, each taking all of that school's seqs
    assert len(dml) == 5  # then one executemany of head updates, and one of inserts
    assert len([s for s in dml if "INTO ACCESS_LOG " in s]) == 1
    with Session(db.engine) as session:
        for school in SCHOOLS:
            report = verify(session, school, db.keyring.key_for(school))
            assert (report.entries, report.head_seq, report.breaks) == (4, 4, [])
            assert [r.seq for r in stored(db, school)] == [4, 3, 2, 1]


def test_concurrent_batches_across_schools_stay_gapless_and_chained(db: ConsentDb) -> None:
    """Many connections at once, each batch touching the schools in its own order."""
    db.keyring.audit_key()
    rng = random.Random(7)
    batches = [
        [entry(db, n * 10 + k, school=rng.choice(SCHOOLS)) for k in range(rng.randint(1, 6))]
        for n in range(60)
    ]

    def write(batch: list[LogEntry]) -> list[tuple[str, int]]:
        with session_scope(db.engine) as session:
            seqs = append_entries(session, batch, db.keyring.key_for)
        return [(e.school_id, s) for e, s in zip(batch, seqs, strict=True)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        written = [pair for result in pool.map(write, batches) for pair in result]
    per_school = Counter(school for school, _ in written)
    with Session(db.engine) as session:
        for school in SCHOOLS:
            mine = sorted(seq for s, seq in written if s == school)
            assert mine == list(range(1, per_school[school] + 1))
            report = verify(session, school, db.keyring.key_for(school))
            assert (report.entries, report.breaks) == (per_school[school], [])


async def test_concurrent_appends_across_schools_through_two_lingering_writers(
    db: ConsentDb, database_url: str
) -> None:
    db.keyring.audit_key()
    other = make_engine(database_url)
    writers = [
        AccessLogWriter(lambda: session_scope(db.engine), db.keyring.key_for, linger=0.002),
        AccessLogWriter(lambda: session_scope(other), db.keyring.key_for, linger=0.002),
    ]
    for writer in writers:
        await writer.start()

    async def reader(r: int) -> list[int]:
        seqs = []
        for k in range(8):
            n = r * 8 + k
            seqs.append(await writers[n % 2].append(entry(db, n, school=SCHOOLS[n % 3])))
        return seqs

    try:
        results = await asyncio.gather(*(reader(r) for r in range(16)))
    finally:
        for writer in writers:
            await writer.stop()
        other.dispose()
    schools = [SCHOOLS[(r * 8 + k) % 3] for r in range(16) for k in range(8)]
    seqs = [seq for result in results for seq in result]
    with Session(db.engine) as session:
        for school in SCHOOLS:
            mine = sorted(q for q, s in zip(seqs, schools, strict=True) if s == school)
            assert mine == list(range(1, schools.count(school) + 1))
            report = verify(session, school, db.keyring.key_for(school))
            assert (report.entries, report.breaks) == (len(mine), [])


async def test_the_writer_lingers_for_more_under_load_but_not_for_a_lone_append(
    db: ConsentDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.keyring.audit_key()
    unit = CountingBatches()  # PostgreSQL writes a known head's batch outside a unit
    original = AccessLogWriter._write

    def counted(writer: AccessLogWriter, items: list[Any]) -> list[int]:
        unit.transactions += 1
        return original(writer, items)

    monkeypatch.setattr(AccessLogWriter, "_write", counted)
    writer = AccessLogWriter(
        partial(session_scope, db.engine), db.keyring.key_for, linger=5.0, linger_batch=4
    )
    await writer.start()
    try:
        started = time.monotonic()
        assert await writer.append(entry(db, 0)) == 1  # nothing else arriving: no wait
        assert time.monotonic() - started < 2.5
        started = time.monotonic()
        first = asyncio.gather(writer.append(entry(db, 1)), writer.append(entry(db, 2)))
        await asyncio.sleep(0.05)  # the writer has taken 2 and waits for 2 more
        assert unit.transactions == 1
        rest = await asyncio.gather(writer.append(entry(db, 3)), writer.append(entry(db, 4)))
        assert [*await first, *rest] == [2, 3, 4, 5]
        assert unit.transactions == 2  # the four in one transaction
        assert time.monotonic() - started < 2.5  # woken by the fourth, not by the timer
        pending = asyncio.gather(writer.append(entry(db, 5)), writer.append(entry(db, 6)))
        await asyncio.sleep(0.05)
        started = time.monotonic()
    finally:
        await writer.stop()  # stopping wakes a lingering writer, which writes what it has
    assert time.monotonic() - started < 2.5
    assert list(await pending) == [6, 7]
    assert unit.transactions == 3


async def test_linger_zero_writes_what_is_queued_at_once(db: ConsentDb) -> None:
    db.keyring.audit_key()
    unit = CountingUnit(db)
    writer = AccessLogWriter(unit, db.keyring.key_for, linger=0)
    await writer.start()
    try:
        both = asyncio.gather(writer.append(entry(db, 1)), writer.append(entry(db, 2)))
        assert list(await asyncio.wait_for(both, timeout=10)) == [1, 2]
        assert unit.transactions == 1
    finally:
        await writer.stop()
    with pytest.raises(ValueError, match="linger"):
        AccessLogWriter(unit, db.keyring.key_for, linger=-1)


async def test_a_failed_commit_fails_every_entry_of_its_batch(db: ConsentDb) -> None:
    db.keyring.audit_key()

    @contextmanager
    def commit_fails() -> Iterator[Session]:
        with session_scope(db.engine) as session:
            yield session
            raise RuntimeError("disk full")

    writer = AccessLogWriter(commit_fails, db.keyring.key_for, linger=0.05, linger_batch=5)
    await writer.start()
    try:
        results = await asyncio.gather(
            *(writer.append(entry(db, n, school=SCHOOLS[n % 3])) for n in range(5)),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert all(isinstance(r, AccessLogWriteError) for r in results), results
    assert all("disk full" in str(r) for r in results)
    for school in SCHOOLS:
        assert stored(db, school) == []
    writer = AccessLogWriter(lambda: session_scope(db.engine), db.keyring.key_for)
    await writer.start()
    try:
        assert await writer.append(entry(db, 9)) == 1  # the failed batch took no seqs
    finally:
        await writer.stop()


async def test_an_entry_that_cannot_be_encoded_fails_alone(db: ConsentDb) -> None:
    db.keyring.audit_key()
    writer = AccessLogWriter(lambda: session_scope(db.engine), db.keyring.key_for)
    await writer.start()
    try:
        results = await asyncio.gather(
            writer.append(entry(db, 1)),
            writer.append(entry(db, 2, reason="\ud800")),
            writer.append(entry(db, 3)),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert results[0] == 1
    assert results[2] == 2
    assert isinstance(results[1], AccessLogWriteError)
    assert "cannot be encoded" in str(results[1])
    with Session(db.engine) as session:
        assert verify(session, "sch_a", db.keyring.key_for("sch_a")).intact
