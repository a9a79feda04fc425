"""Cutting uploads into batches: exact sizes, order, the config key, and the outbox's pieces."""

from __future__ import annotations

import gzip
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.batching import body_bytes, envelope_bytes, pack, render, spooled
from agents.config import DEFAULT_MAX_BATCH_BYTES, MAX_BATCHES_PER_REQUEST, ConfigError
from agents.diff import compute
from agents.extract import build_body, check_records
from agents.state import AgentState, SpooledBatch
from tests.agents.agent_fakes import make_config

NOW = datetime(2025, 11, 19, 2, 0, tzinfo=UTC)
AREA = "students.basic"
BATCH_ID = "0b1d3c4e-5f60-4718-8a9b-0c1d2e3f4a5b"


class Crash(Exception):
    pass


def records(n: int, size: int = 50) -> list[bytes]:
    return [orjson.dumps({"id": f"r{i}", "forename": "x" * (size + i % 7)}) for i in range(n)]


@pytest.mark.parametrize(
    ("n_records", "deleted"), [(0, []), (1, []), (5, ["a", "b"]), (0, ["only"])]
)
def test_render_is_the_document_orjson_would_write_and_its_size_is_known(
    n_records: int, deleted: list[str]
) -> None:
    encoded = records(n_records)
    body = render(BATCH_ID, AREA, "delta", NOW, encoded, deleted)
    document = orjson.loads(body)
    assert body == orjson.dumps(document)
    assert document["records"] == [orjson.loads(r) for r in encoded]
    assert len(body) == body_bytes(envelope_bytes(AREA, "delta", NOW), encoded, deleted)


def test_build_body_is_unchanged_for_one_batch() -> None:
    rows: list[dict[str, Any]] = [{"id": "a", "forename": "Zoë"}, {"id": "b", "forename": None}]
    diff = compute(rows, {"gone": b"0" * 16}, full=False)
    document = {
        "batch_id": BATCH_ID,
        "area": AREA,
        "mode": "delta",
        "extracted_at": "2025-11-19T02:00:00.000000Z",
        # Records travel as they were hashed: canonical JSON, keys sorted.
        "records": [{"forename": "Zoë", "id": "a"}, {"forename": None, "id": "b"}],
        "deleted": ["gone"],
    }
    assert gzip.decompress(build_body(BATCH_ID, AREA, NOW, diff)) == orjson.dumps(document)


@pytest.mark.parametrize("limit", [1024, 1500, 4000, 100_000])
def test_pack_keeps_order_puts_deletions_last_and_every_body_within_the_limit(limit: int) -> None:
    encoded = records(60)
    deleted = [f"gone-{i}" for i in range(40)]
    overhead = envelope_bytes(AREA, "delta", NOW)
    parts = pack(encoded, deleted, limit=limit, overhead=overhead)
    assert [r for p in parts for r in p.records] == encoded
    assert [d for p in parts for d in p.deleted] == deleted
    seen_deletion = False
    for part in parts:
        body = render(BATCH_ID, AREA, "delta", NOW, part.records, part.deleted)
        assert len(body) == part.size <= limit
        assert not (seen_deletion and part.records), "an upsert after a deletion"
        seen_deletion = seen_deletion or bool(part.deleted)
    if limit >= body_bytes(overhead, encoded, deleted):
        assert len(parts) == 1


def test_pack_gives_an_oversized_item_a_part_of_its_own_and_an_empty_upload_one_part() -> None:
    overhead = envelope_bytes(AREA, "delta", NOW)
    small, big = records(1)[0], orjson.dumps({"id": "big", "forename": "x" * 5000})
    parts = pack([small, big, small], [], limit=2000, overhead=overhead)
    assert [p.records for p in parts] == [[small], [big], [small]]
    (empty,) = pack([], [], limit=2000, overhead=overhead)
    assert (empty.records, empty.deleted, empty.size) == ([], [], overhead)


def test_spooled_batches_get_their_own_ids_and_gzip_json_bodies() -> None:
    parts = pack(records(30), ["x"], limit=1200, overhead=envelope_bytes(AREA, "delta", NOW))
    batches = list(spooled(AREA, "delta", NOW, parts))
    assert len({b.batch_id for b in batches}) == len(parts) > 1
    for batch, part in zip(batches, parts, strict=True):
        document = orjson.loads(gzip.decompress(batch.body_gz))
        assert document["batch_id"] == batch.batch_id
        assert (batch.records, batch.deleted) == (len(part.records), len(part.deleted))


def test_check_records_names_an_oversized_record_by_index_and_id_only() -> None:
    rows = [
        {"id": "s1", "forename": "Ann"},
        {"id": "s2", "forename": "SECRET-" + "y" * 3000},
        {"id": "s3", "forename": "Bob"},
    ]
    good, problems = check_records(AREA, rows, batch_limit=2000, overhead=200)
    assert [r["id"] for r in good] == ["s1", "s3"]
    (problem,) = problems
    assert problem.startswith("record 1 (s2): ")
    assert "2000" in problem
    assert "SECRET" not in problem


# --- configuration ------------------------------------------------------------------------


def test_max_batch_bytes_defaults_to_8_mib_and_is_validated(tmp_path: Path) -> None:
    assert make_config(tmp_path).upload.max_batch_bytes == DEFAULT_MAX_BATCH_BYTES == 8 << 20
    config = make_config(tmp_path, upload={"max_batch_bytes": 200_000})
    assert config.upload.max_batch_bytes == 200_000
    for bad in (True, 1.5e6, "8MiB", 1023, 64 * 1024 * 1024 + 1):
        with pytest.raises(ConfigError, match=r"upload\.max_batch_bytes"):
            make_config(tmp_path, upload={"max_batch_bytes": bad})


def test_batches_per_request_defaults_to_32_and_is_validated(tmp_path: Path) -> None:
    assert make_config(tmp_path).upload.batches_per_request == 32
    assert make_config(tmp_path, upload={"batches_per_request": 1}).upload.batches_per_request == 1
    for bad in (True, 0, 2.5, "8", MAX_BATCHES_PER_REQUEST + 1):
        with pytest.raises(ConfigError, match=r"upload\.batches_per_request"):
            make_config(tmp_path, upload={"batches_per_request": bad})


def test_an_outbox_entry_knows_its_inflated_size_from_the_gzip_trailer(
    tmp_path: Path,
) -> None:
    state = AgentState.open(tmp_path)
    spooled_batch = batch("b-1")
    spool(state, spooled_batch)
    [entry] = state.pending()
    assert entry.inflated == len(gzip.decompress(spooled_batch.body_gz))
    state.close()


# --- the outbox -----------------------------------------------------------------------------


def batch(batch_id: str, area: str = AREA, mode: str = "delta") -> SpooledBatch:
    body = gzip.compress(render(batch_id, area, mode, NOW, [], []))
    return SpooledBatch(batch_id, area, mode, NOW, 0, 0, body)


def spool(state: AgentState, *batches: SpooledBatch, crash: bool = False) -> list[str]:
    def boom() -> None:
        raise Crash

    return state.spool(
        list(batches),
        {"a": b"1" * 16},
        [],
        now=NOW,
        duration=0.1,
        total_records=1,
        before_commit=boom if crash else None,
    )


def test_all_batches_of_an_upload_are_spooled_with_the_hashes_or_none_are(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    with pytest.raises(Crash):
        spool(state, batch("c1"), batch("c2"), batch("c3"), crash=True)
    assert state.pending() == []
    assert state.hashes(AREA) == {}
    assert spool(state, batch("c1"), batch("c2"), batch("c3")) == ["c1", "c2", "c3"]
    assert [e.batch_id for e in state.pending()] == ["c1", "c2", "c3"]
    assert state.hashes(AREA) == {"a": b"1" * 16}


def test_a_split_full_rebases_hashes_but_keeps_older_batches_queued(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("old"))
    state.mark_needs_full(AREA)
    state.spool(
        [batch("s1"), batch("s2")], {"z": b"9" * 16}, [], now=NOW, duration=0,
        total_records=1, full=True,
    )  # fmt: skip
    assert [e.batch_id for e in state.pending()] == ["old", "s1", "s2"]
    assert state.hashes(AREA) == {"z": b"9" * 16}
    status = state.areas()[AREA]
    assert status.last_full_at == NOW
    assert not status.needs_full


def test_replace_puts_the_pieces_in_the_batch_place_for_its_area(tmp_path: Path) -> None:
    state = AgentState.open(tmp_path)
    spool(state, batch("a1"), batch("a2"), batch("a3"))
    spool(state, batch("g1", area="groups"))
    assert state.replace("a2", [batch("p1"), batch("p2")], now=NOW)
    order = [(e.area, e.batch_id) for e in state.pending()]
    assert [b for a, b in order if a == AREA] == ["a1", "p1", "p2", "a3"]
    assert [b for a, b in order if a == "groups"] == ["g1"]
    assert not state.replace("a2", [batch("p3")], now=NOW)  # already replaced
    # New batches still go to the end, after the renumbered ones.
    spool(state, batch("a4"))
    assert [e.batch_id for e in state.pending() if e.area == AREA][-2:] == ["a3", "a4"]


def test_a_state_database_of_schema_1_is_upgraded_in_place(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "agent.db")
    db.executescript(
        """
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            batch_id TEXT NOT NULL UNIQUE, area TEXT NOT NULL, mode TEXT NOT NULL,
            created_at TEXT NOT NULL, extracted_at TEXT NOT NULL,
            records INTEGER NOT NULL, deleted INTEGER NOT NULL, body_gz BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT, last_error TEXT
        );
        CREATE TABLE dead_letters (
            batch_id TEXT PRIMARY KEY, area TEXT NOT NULL, mode TEXT NOT NULL,
            created_at TEXT NOT NULL, dead_at TEXT NOT NULL, http_status INTEGER,
            problem TEXT, body_gz BLOB NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO outbox(batch_id, area, mode, created_at, extracted_at, records, deleted,
            body_gz) VALUES ('waiting', 'groups', 'delta', '2025-11-19T02:00:00Z',
            '2025-11-19T02:00:00Z', 0, 0, x'00');
        """
    )
    db.close()
    state = AgentState.open(tmp_path)
    assert [e.batch_id for e in state.pending()] == ["waiting"]
    assert state.retired("waiting") == []
    assert state.meta("schema_version") == "3"
    state.dead_letter("waiting", now=NOW, http_status=422, problem="x")
    assert state.dead_letter_count() == 1
