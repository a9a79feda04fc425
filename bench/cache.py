"""Cache benchmarks: hot-tier reads, warm-tier writes, purge cost.  Prints figures, asserts none.

    uv run python bench/cache.py [--records 1000000] [--hot-reads 5000]

Each figure is compared with a baseline measured in the same run: a raw Redis GET of the
same bytes for the hot tier; purges of the same number of expired records among fewer or
more records in all, to show that purge cost follows what expired, not the cache's size.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# This file is named cache.py: run as a script, its directory comes first on sys.path and
# it would shadow the `cache` package it measures.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import orjson
import redis
from sqlalchemy import Engine, insert

from broker.db import make_engine, session_scope, upgrade
from broker.embedded_redis import EmbeddedRedis
from cache import purge, warm
from cache.blobs import DirectoryBlobStore
from cache.hot import HotCache, page_ref
from cache.key_store import SqlDataKeyStore
from cache.keys import InMemoryDataKeyStore, KeyRing, LocalKeyProvider
from cache.models import CacheTier, cached_areas, cached_records
from cache.naming import Namer
from cache.service import encode_body

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SCHOOL = "sch_bench"
PURGE_AREA = "attendance.marks"
RECORDS_PER_AREA = 1000
ROUNDS = 11


def student(number: int) -> dict[str, Any]:
    """A students.basic record with every field filled, as a secondary MIS would send it."""
    return {
        "id": f"stu-{number:06d}",
        "upn": f"A{number:012d}",
        "admission_number": f"{number:06d}",
        "forename": f"Forename{number}",
        "surname": f"Surname{number}",
        "legal_forename": f"Forename{number}",
        "legal_surname": f"Surname{number}",
        "middle_name": "Middle",
        "preferred_name": f"Pref{number}",
        "date_of_birth": "2013-04-01",
        "gender": "F" if number % 2 else "M",
        "year_group": "Year 8",
        "registration_group": "8B",
        "house": "Newton",
        "on_roll": True,
        "entry_date": "2024-09-04",
        "leaving_date": None,
        "uln": f"{number:010d}",
        "exam_number": f"{number % 10000:04d}",
    }


def provider() -> LocalKeyProvider:
    return LocalKeyProvider({"bench": secrets.token_bytes(32)}, "bench")


@contextmanager
def embedded_redis(root: Path) -> Iterator[redis.Redis]:
    server = EmbeddedRedis(root / "run", root / "store", root / "run" / "r.sock", "256mb")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def timed(action: Callable[[], object], repeat: int) -> float:
    """Seconds per call over `repeat` calls."""
    start = time.perf_counter()
    for _ in range(repeat):
        action()
    return (time.perf_counter() - start) / repeat


def bench_hot(client: redis.Redis, reads: int) -> None:
    keyring = KeyRing(provider(), InMemoryDataKeyStore())
    namer = Namer(keyring)
    hot = HotCache(client, keyring, namer, ttl_seconds=900)
    page = warm.Page([student(n) for n in range(100)], "c" * 80, NOW, False, 1)
    body = encode_body(page)
    ref = page_ref(
        namer,
        school_id=SCHOOL,
        area="students.basic",
        data_version=1,
        stale=False,
        fields=None,
        updated_since=None,
        cursor=None,
        limit=100,
    )
    hot.put_page(ref, body)
    sealed = client.get(ref.key)
    client.set("bench:raw", sealed or b"", ex=900)  # the same bytes, read raw
    hot.get_page(ref)  # warm the key ring's cache and the connection

    rounds: dict[str, list[float]] = {"raw": [], "serve": [], "decode": []}
    per_round = max(1, reads // ROUNDS)
    for _ in range(ROUNDS):  # interleaved rounds, so drift hits every variant alike
        rounds["raw"].append(timed(lambda: client.get("bench:raw"), per_round))
        rounds["serve"].append(timed(lambda: hot.get_page(ref), per_round))
        rounds["decode"].append(
            timed(lambda: orjson.loads(hot.get_page(ref) or b"null"), per_round)
        )
    print(f"hot page: 100 students.basic records, {len(body):,} bytes of JSON")
    print(f"  {ROUNDS} interleaved rounds; ratio = raw GET time / hot read time (1.0 = free)")
    print(f"  raw Redis GET of the same bytes       median {_us(rounds['raw'], statistics.median)}")
    for name, label in (
        ("serve", "GET + decrypt (what is served)"),
        ("decode", "GET + decrypt + JSON decode"),
    ):
        paired = statistics.median(r / t for r, t in zip(rounds["raw"], rounds[name], strict=True))
        best = min(rounds["raw"]) / min(rounds[name])
        print(
            f"  hot: {label:<31}  median {_us(rounds[name], statistics.median)}"
            f"  ratio {paired:.2f} (median of rounds), {best:.2f} (best rounds)"
        )
    print("  target ratio >= 0.9")


def _us(seconds: list[float], pick: Callable[[list[float]], float]) -> str:
    return f"{pick(seconds) * 1e6:7.1f} us"


def bench_warm(root: Path, count: int = 2000) -> None:
    engine = make_engine(f"sqlite:///{root / 'warm.db'}")
    upgrade(engine)
    keyring = KeyRing(provider(), SqlDataKeyStore(engine))
    namer = Namer(keyring)
    blobs = DirectoryBlobStore(root / "warm-blobs")
    batches = {
        "new records": [student(n) for n in range(count)],
        "every record changed": [{**student(n), "house": "Curie"} for n in range(count)],
        "nothing changed": [{**student(n), "house": "Curie"} for n in range(count)],
    }
    print(f"warm tier (SQLite file): full uploads of {count:,} students.basic records")
    for hour, (label, records) in enumerate(batches.items()):
        at = NOW + timedelta(hours=hour)
        start = time.perf_counter()
        with session_scope(engine) as session:
            warm.apply_batch(
                session,
                keyring,
                blobs=blobs,
                namer=namer,
                school_id=SCHOOL,
                area="students.basic",
                mode="full",
                records=records,
                deleted=[],
                extracted_at=at,
                now=at,
            )
        seconds = time.perf_counter() - start
        print(f"  {label:<22} {count / seconds:10,.0f} records/s")
    engine.dispose()


def fill(engine: Engine, *, expired: int, fresh: int) -> None:
    """Insert areas of RECORDS_PER_AREA fake sealed records, some long expired."""
    ciphertext = secrets.token_bytes(120)
    area_no = 0
    for total, purge_after in (
        (expired, NOW - timedelta(days=1)),
        (fresh, NOW + timedelta(days=1)),
    ):
        for _ in range(total // RECORDS_PER_AREA):
            school = f"sch_{area_no:07d}"
            area_no += 1
            with engine.begin() as conn:
                conn.execute(insert(cached_areas).values(**area_row(school, purge_after)))
                conn.execute(insert(cached_records), record_rows(school, ciphertext))


def area_row(school: str, purge_after: datetime) -> dict[str, Any]:
    return {
        "school_id": school,
        "area": PURGE_AREA,
        "as_of": purge_after - timedelta(days=31),
        "purge_after": purge_after,
        "tier": CacheTier.WARM,
        "data_version": 1,
        "last_seq": RECORDS_PER_AREA,
        "record_count": RECORDS_PER_AREA,
        "created_at": NOW,
        "updated_at": NOW,
    }


def record_rows(school: str, ciphertext: bytes) -> list[dict[str, Any]]:
    return [
        {
            "school_id": school,
            "area": PURGE_AREA,
            "record_key": f"{n:032x}",
            "seq": n + 1,
            "changed_at": NOW - timedelta(days=40),
            "deleted": False,
            "as_of": NOW - timedelta(days=40),
            "content_hash": ciphertext[:16],
            "ciphertext": ciphertext,
            "blob_key": None,
        }
        for n in range(RECORDS_PER_AREA)
    ]


def prepared(root: Path, name: str, *, expired: int, fresh: int) -> Engine:
    engine = make_engine(f"sqlite:///{root / name}")
    upgrade(engine)
    fill(engine, expired=expired, fresh=fresh)
    return engine


def purge_all(engine: Engine, blobs: DirectoryBlobStore) -> tuple[float, float, int]:
    """Wall and CPU seconds to purge everything expired, and the rows removed.

    CPU time is the fairer figure on a shared machine: SQLite runs in this process, so it
    counts the work done and not the time spent waiting for other processes.
    """
    namer = Namer(KeyRing(provider(), SqlDataKeyStore(engine)))
    namer.prepare()
    removed = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while True:
        with session_scope(engine) as session:
            report = purge.purge_expired(session, blobs, namer=namer, now=NOW, dry_run=False)
        removed += report.rows
        if not report.areas:
            break
    return time.perf_counter() - wall, time.process_time() - cpu, removed


def bench_purge(root: Path, records: int) -> None:
    print(f"purge (SQLite file), areas of {RECORDS_PER_AREA:,} records")
    cases = {
        "a": (records, 0),
        "b": (records, records),
        "c": (records // 2, records + records // 2),
    }
    # Fill every database before timing any purge, so all run in the same conditions.
    engines = {
        name: prepared(root, f"purge-{name}.db", expired=expired, fresh=fresh)
        for name, (expired, fresh) in cases.items()
    }
    cpu_seconds = {}
    for name, (expired, fresh) in cases.items():
        wall, cpu, removed = purge_all(engines[name], DirectoryBlobStore(root / "none"))
        engines[name].dispose()
        assert removed == expired, (removed, expired)  # sanity of the set-up, not a timing
        cpu_seconds[name] = cpu
        print(
            f"  {expired:>9,} expired among {expired + fresh:>9,} in all: "
            f"{wall:7.2f} s wall, {cpu:7.2f} s CPU  ({expired / cpu:,.0f} records/CPU-s)"
        )
    base = cpu_seconds["a"]
    print(f"  CPU cost, same expired among twice the records:     x{cpu_seconds['b'] / base:.2f}")
    print(f"  CPU cost, half the expired among twice the records: x{cpu_seconds['c'] / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="expired records to purge")
    parser.add_argument("--hot-reads", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as temp:
        root = Path(temp)
        with embedded_redis(root / "redis") as client:
            bench_hot(client, args.hot_reads)
        bench_warm(root)
        bench_purge(root, args.records)


if __name__ == "__main__":
    main()
