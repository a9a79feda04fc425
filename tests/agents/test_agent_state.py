"""The state database: a batch and its hashes are committed together or not at all."""

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.batching import gzip_body, render
from agents.state import AgentState, SpooledBatch

NOW = datetime(2025, 11, 19, 2, 0, tzinfo=UTC)
AREA = "students.basic"


class Crash(Exception):
    pass


def body(batch_id: str, area: str = "students.basic", mode: str = "delta") -> bytes:
    return gzip_body(render(batch_id, area, mode, NOW, [], []))


def batch(batch_id: str, area: str = "students.basic", mode: str = "delta") -> SpooledBatch:
    return SpooledBatch(batch_id, area, mode, NOW, 1, 0, body(batch_id, area, mode))


def spool(
    state: AgentState,
    b: SpooledBatch,
    hashes: dict[str, bytes],
    before_commit: Callable[[], None] | None = None,
) -> None:
    state.spool(
        b, hashes, [], now=NOW, duration=0.1, total_records=len(hashes), before_commit=before_commit
    )


def test_spool_stores_batch_and_hashes_together(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1"), {"a": b"1" * 16})
    assert [e.batch_id for e in state.pending()] == ["b1"]
    assert state.hashes("students.basic") == {"a": b"1" * 16}
    status = state.areas()["students.basic"]
    assert status.last_extracted_at == NOW
    assert status.last_ok is True
    assert state.area("students.basic") == status  # one area's, read alone
    assert state.area("groups") is None


def test_a_crash_inside_the_transaction_leaves_neither(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1"), {"a": b"1" * 16})

    def crash() -> None:
        raise Crash

    with pytest.raises(Crash):
        spool(state, batch("b2"), {"a": b"2" * 16, "b": b"3" * 16}, before_commit=crash)
    assert [e.batch_id for e in state.pending()] == ["b1"]
    assert state.hashes("students.basic") == {"a": b"1" * 16}
    # And a fresh process sees the same thing: the rollback reached the disk.
    state.close()
    reopened = AgentState.open(tmp_path)
    assert [e.batch_id for e in reopened.pending()] == ["b1"]
    assert reopened.hashes("students.basic") == {"a": b"1" * 16}


def test_deleted_ids_lose_their_hashes(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1"), {"a": b"1" * 16, "b": b"2" * 16})
    state.spool(batch("b2"), {}, ["a"], now=NOW, duration=0, total_records=1)
    assert state.hashes("students.basic") == {"b": b"2" * 16}


def test_a_full_batch_replaces_hashes_and_supersedes_waiting_batches(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1"), {"a": b"1" * 16, "b": b"2" * 16})
    spool(state, batch("other", area="groups"), {"g": b"9" * 16})
    spool(state, batch("b2", mode="full"), {"c": b"3" * 16})
    assert [e.batch_id for e in state.pending()] == ["other", "b2"]
    assert state.hashes("students.basic") == {"c": b"3" * 16}
    assert state.areas()["students.basic"].last_full_at == NOW


def test_a_delta_keeps_the_hashes_it_does_not_touch_and_other_areas_keep_theirs(
    tmp_path: Path,
) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1", mode="full"), {"a": b"1" * 16, "b": b"2" * 16, "c": b"3" * 16})
    spool(state, batch("g1", area="groups", mode="full"), {"g": b"9" * 16})
    state.spool(
        batch("b2"), {"b": b"4" * 16, "d": b"5" * 16}, ["c"], now=NOW, duration=0, total_records=3
    )
    assert state.hashes("students.basic") == {"a": b"1" * 16, "b": b"4" * 16, "d": b"5" * 16}
    assert state.hashes("groups") == {"g": b"9" * 16}
    assert state.hashes("contacts") == {}


def delta(state: AgentState, batch_id: str, hashes: dict[str, bytes], **kwargs: Any) -> None:
    state.spool(batch(batch_id), hashes, ["c"], now=NOW, duration=0, total_records=1, **kwargs)


def test_a_delta_spooled_on_the_hashes_it_read_keeps_the_rest_as_read(tmp_path: Path) -> None:
    """The hashes a delta was diffed against are taken as read, not read again: the same
    result as reading them again."""
    state = AgentState.open(tmp_path)
    spool(state, batch("b1", mode="full"), {"a": b"1" * 16, "b": b"2" * 16, "c": b"3" * 16})
    base = state.read_hashes(AREA)
    assert base.hashes == state.hashes(AREA)
    delta(state, "b2", {"b": b"4" * 16}, base=base)
    assert state.hashes(AREA) == {"a": b"1" * 16, "b": b"4" * 16}
    assert base.hashes == {"a": b"1" * 16, "b": b"2" * 16, "c": b"3" * 16}  # not changed


@pytest.mark.parametrize("writer", ["another process", "this one", "another area"])
def test_hashes_stored_after_they_were_read_are_read_again(tmp_path: Path, writer: str) -> None:
    """A delta spooled on hashes read before another spool (of this connection or of
    another process's) reads them again, and so keeps what that spool stored."""
    state = AgentState.open(tmp_path)
    spool(state, batch("b1", mode="full"), {"a": b"1" * 16, "c": b"3" * 16})
    base = state.read_hashes(AREA if writer != "another area" else "groups")
    if writer == "another process":
        other = AgentState.open(tmp_path)
        spool(other, batch("x1"), {"x": b"7" * 16})
        other.close()
    elif writer == "this one":
        spool(state, batch("x1"), {"x": b"7" * 16})
    delta(state, "b2", {"b": b"4" * 16}, base=base)
    expected = {"a": b"1" * 16, "b": b"4" * 16}
    assert state.hashes(AREA) == (
        expected if writer == "another area" else expected | {"x": b"7" * 16}
    )


def test_a_spool_that_failed_makes_the_hashes_read_before_it_read_again(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1", mode="full"), {"a": b"1" * 16, "c": b"3" * 16})
    base = state.read_hashes(AREA)
    with pytest.raises(Crash):
        delta(state, "b2", {"b": b"4" * 16}, base=base, before_commit=_crash)
    assert base.version != state.read_hashes(AREA).version
    delta(state, "b3", {"d": b"5" * 16}, base=state.read_hashes(AREA))
    assert state.hashes(AREA) == {"a": b"1" * 16, "d": b"5" * 16}


def _crash() -> None:
    raise Crash


def test_a_hash_of_the_wrong_size_is_refused_and_nothing_is_spooled(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    with pytest.raises(ValueError, match="16 bytes"):
        spool(state, batch("b1"), {"a": b"short"})
    assert state.pending() == []
    assert state.hashes("students.basic") == {}


def test_schema_2_record_hashes_are_packed_per_area_on_open(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "agent.db")
    db.executescript(
        """
        CREATE TABLE record_hashes (
            area TEXT NOT NULL, record_id TEXT NOT NULL, hash BLOB NOT NULL,
            PRIMARY KEY (area, record_id)
        ) WITHOUT ROWID;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '2');
        """
    )
    rows = [("students.basic", f"stu-{n}", bytes([n]) * 16) for n in range(100)]
    db.executemany(
        "INSERT INTO record_hashes VALUES (?, ?, ?)", [*rows, ("groups", "g", b"9" * 16)]
    )
    db.commit()
    db.close()
    state = AgentState.open(tmp_path)
    assert state.hashes("students.basic") == {record_id: digest for _, record_id, digest in rows}
    assert state.hashes("groups") == {"g": b"9" * 16}
    assert state.meta("schema_version") == "3"
    state.close()
    db = sqlite3.connect(tmp_path / "agent.db")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert "record_hashes" not in tables
    # Opening again finds nothing left to pack and keeps what was packed.
    assert AgentState.open(tmp_path).hashes("groups") == {"g": b"9" * 16}


def test_outbox_is_first_in_first_out(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    for name in ("b1", "b2", "b3"):
        spool(state, batch(name), {})
    state.confirm("b2", now=NOW)
    assert [e.batch_id for e in state.pending()] == ["b1", "b3"]
    assert state.body("b1") == body("b1")


def test_dead_letter_and_drop_mark_the_area_for_a_full_upload(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1", mode="full"), {})
    spool(state, batch("b2", area="groups", mode="full"), {})
    assert not state.areas()["students.basic"].needs_full
    state.dead_letter("b1", now=NOW, http_status=422, problem="bad field")
    state.drop("b2")
    assert state.pending() == []
    assert state.dead_letter_count() == 1
    assert state.areas()["students.basic"].needs_full
    assert state.areas()["groups"].needs_full


def test_defer_counts_attempts_and_sets_next_try(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("b1"), {})
    later = NOW + timedelta(seconds=30)
    assert state.defer("b1", next_attempt_at=later, error="HTTP 503") == 1
    (entry,) = state.pending()
    assert (entry.attempts, entry.next_attempt_at, entry.last_error) == (1, later, "HTTP 503")


def test_completed_commands_are_remembered_once(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    first = state.complete_command("cmd_1", kind="extract", status="done", detail="x", now=NOW)
    again = state.complete_command("cmd_1", kind="extract", status="failed", detail="y", now=NOW)
    assert again == first
    assert [c.id for c in state.unreported_commands()] == ["cmd_1"]
    state.command_reported("cmd_1")
    assert state.unreported_commands() == []
    state.forget_commands_before(NOW + timedelta(days=8))
    assert state.completed_command("cmd_1") is None


def test_the_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    assert state._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert state._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
