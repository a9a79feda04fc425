"""The warm tier: apply semantics, change detection, pagination, projection, cursors."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from broker.db import session_scope
from cache import warm
from cache.blobs import DirectoryBlobStore
from cache.errors import (
    InvalidBatchError,
    InvalidCursorError,
    NotCachedError,
    StaleUploadError,
    UnknownFieldError,
)
from cache.keys import KeyRing
from cache.models import cached_areas, cached_records
from cache.naming import Namer
from tests.cache.conftest import SCHOOL, student, students
from tests.conftest import T0

AREA = "students.basic"


class Warm:
    """The warm-tier functions bound to one database, key ring and blob store."""

    def __init__(
        self, engine: Engine, keyring: KeyRing, blobs: DirectoryBlobStore, namer: Namer
    ) -> None:
        self.engine, self.keyring, self.blobs, self.namer = engine, keyring, blobs, namer

    def apply(
        self,
        records: list[dict[str, Any]],
        *,
        mode: warm.Mode = "full",
        deleted: tuple[str, ...] = (),
        at: datetime = T0,
        now: datetime | None = None,
        area: str = AREA,
        school: str = SCHOOL,
    ) -> warm.ApplyResult:
        with session_scope(self.engine) as session:
            return warm.apply_batch(
                session,
                self.keyring,
                blobs=self.blobs,
                namer=self.namer,
                school_id=school,
                area=area,
                mode=mode,
                records=records,
                deleted=list(deleted),
                extracted_at=at,
                now=now or at + timedelta(minutes=5),
            )

    def page(
        self,
        *,
        fields: frozenset[str] | None = None,
        since: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
        now: datetime = T0 + timedelta(hours=1),
        area: str = AREA,
        school: str = SCHOOL,
    ) -> warm.Page:
        with session_scope(self.engine) as session:
            return warm.read_page(
                session,
                self.keyring,
                blobs=self.blobs,
                namer=self.namer,
                school_id=school,
                area=area,
                fields=fields,
                updated_since=since,
                limit=limit,
                cursor=cursor,
                now=now,
            )

    def all_pages(self, cursor: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.page(cursor=cursor, **kwargs)
            out += page.records
            cursor = page.next_cursor
            if cursor is None:
                return out


@pytest.fixture
def w(engine: Engine, keyring: KeyRing, blobs: DirectoryBlobStore, namer: Namer) -> Warm:
    return Warm(engine, keyring, blobs, namer)


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


def test_apply_then_read_round_trip(w: Warm) -> None:
    batch = students(5)
    result = w.apply(batch)
    assert (result.applied, result.deleted, result.unchanged) == (5, 0, 0)
    page = w.page()
    assert page.as_of == T0
    assert not page.stale
    assert page.data_version == result.data_version
    assert page.next_cursor is None
    by_id = {r["id"]: r for r in page.records}
    assert by_id.keys() == {r["id"] for r in batch}
    got = by_id["stu-00003"]
    assert got["upn"] == "A000000000003"
    assert got["on_roll"] is True
    assert got["legal_surname"] is None  # every catalogue field is present, null if absent


def test_an_area_never_cached_raises_not_cached(w: Warm) -> None:
    with pytest.raises(NotCachedError):
        w.page()


def test_full_upload_tombstones_absent_records_and_delta_only_named_ones(w: Warm) -> None:
    w.apply(students(4))
    result = w.apply(students(2), at=T0 + timedelta(hours=1))  # full: 2 and 3 go
    assert (result.applied, result.deleted, result.unchanged) == (0, 2, 2)
    assert sorted(ids(w.page().records)) == ["stu-00000", "stu-00001"]
    result = w.apply(
        [student(7)], mode="delta", deleted=("stu-00000", "nope"), at=T0 + timedelta(hours=2)
    )
    assert (result.applied, result.deleted) == (1, 0 + 1)
    assert sorted(ids(w.page().records)) == ["stu-00001", "stu-00007"]
    since = w.page(since=T0)
    tombstones = [r for r in since.records if r.get("deleted")]
    assert sorted(ids(tombstones)) == ["stu-00000", "stu-00002", "stu-00003"]
    assert all(r == {"id": r["id"], "deleted": True} for r in tombstones)


def test_a_deleted_record_can_come_back(w: Warm) -> None:
    w.apply(students(2))
    w.apply([student(0)], at=T0 + timedelta(hours=1))
    w.apply(students(2), at=T0 + timedelta(hours=2))
    assert sorted(ids(w.page().records)) == ["stu-00000", "stu-00001"]


def test_old_tombstones_are_trimmed_by_a_full_upload_unless_revived(
    w: Warm, engine: Engine
) -> None:
    w.apply(students(3), now=T0)
    w.apply([student(0)], at=T0 + timedelta(hours=1), now=T0 + timedelta(hours=1))
    late = T0 + timedelta(days=40)
    w.apply([student(0), student(1)], at=late, now=late)  # stu-2's tombstone is 40 days old
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(cached_records)).scalar_one()
    assert rows == 2
    assert sorted(ids(w.page(now=late).records)) == ["stu-00000", "stu-00001"]


def test_an_older_upload_is_refused_and_an_equal_one_accepted(w: Warm, engine: Engine) -> None:
    first = w.apply(students(3), at=T0)
    with pytest.raises(StaleUploadError):
        w.apply([student(1, surname="Older")], mode="delta", at=T0 - timedelta(seconds=1))
    again = w.apply(students(3), at=T0)
    assert (again.applied, again.unchanged) == (0, 3)
    assert again.data_version == first.data_version
    assert "Older" not in str(w.page().records)
    newer = w.apply([student(1, surname="Newer")], mode="delta", at=T0 + timedelta(hours=1))
    assert newer.data_version == first.data_version + 1
    assert w.page().as_of == T0 + timedelta(hours=1)


def test_unchanged_records_keep_their_seq_and_stay_out_of_deltas(w: Warm, engine: Engine) -> None:
    w.apply(students(10), now=T0)
    changed = [*students(10)]
    changed[4] = student(4, surname="Changed")
    result = w.apply(changed, at=T0 + timedelta(hours=1), now=T0 + timedelta(hours=1))
    assert (result.applied, result.unchanged) == (1, 9)
    delta = w.page(since=T0 + timedelta(minutes=30))
    assert [(r["id"], r["surname"]) for r in delta.records] == [("stu-00004", "Changed")]
    with engine.connect() as conn:
        last_seq = conn.execute(select(cached_areas.c.last_seq)).scalar_one()
        max_seq = conn.execute(select(func.max(cached_records.c.seq))).scalar_one()
    assert last_seq == max_seq == 11


def test_key_order_in_a_record_is_not_a_change(w: Warm) -> None:
    w.apply([student(1)])
    reordered = dict(reversed(list(student(1).items())))
    assert w.apply([reordered], at=T0 + timedelta(hours=1)).unchanged == 1


def test_projection_always_includes_id(w: Warm) -> None:
    w.apply(students(3))
    page = w.page(fields=frozenset({"surname", "upn"}))
    assert all(set(r) == {"id", "surname", "upn"} for r in page.records)
    assert set(w.page(fields=frozenset({"id"})).records[0]) == {"id"}
    with pytest.raises(UnknownFieldError):
        w.page(fields=frozenset({"surname", "shoe_size"}))


def test_invalid_batches_are_refused_before_anything_is_written(w: Warm, engine: Engine) -> None:
    for records, deleted in (
        ([student(1), student(1)], ()),
        ([{"surname": "no id"}], ()),
        ([student(1)], ("stu-00001",)),
    ):
        with pytest.raises(InvalidBatchError):
            w.apply(records, mode="delta", deleted=deleted)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cached_areas)).scalar_one() == 0


def test_stale_area_is_served_marked_stale(w: Warm) -> None:
    w.apply(students(1))
    assert not w.page(now=T0 + timedelta(hours=24) - timedelta(seconds=1)).stale
    assert w.page(now=T0 + timedelta(hours=24)).stale
    assert ids(w.page(now=T0 + timedelta(days=20)).records) == ["stu-00000"]


def test_full_pagination_is_stable_while_an_upload_lands(w: Warm) -> None:
    w.apply(students(50))
    first = w.page(limit=10)
    # Between pages: 10 records change, 5 are deleted, 5 new ones appear.
    changed = [student(n, surname="Moved") for n in range(20, 30)]
    w.apply(
        [*students(20), *changed, *students(15, start=35), *students(5, start=100)],
        at=T0 + timedelta(hours=1),
    )
    seen = ids(first.records) + ids(w.all_pages(limit=10, cursor=first.next_cursor))
    assert len(seen) == len(set(seen)), "a record was repeated"
    throughout = {f"stu-{n:05d}" for n in [*range(30), *range(35, 50)]}
    assert throughout <= set(seen), "a record that existed throughout was skipped"


def test_delta_pagination_is_stable_while_an_upload_lands(w: Warm) -> None:
    w.apply(students(40), now=T0)
    first = w.page(since=T0 - timedelta(hours=1), limit=7)
    # Records already listed and not yet listed change, and some are deleted.
    later = T0 + timedelta(hours=1)
    w.apply(
        [student(n, surname="Again") for n in (0, 1, 30, 31)],
        mode="delta",
        deleted=("stu-00002", "stu-00035"),
        at=later,
        now=later,
    )
    rest = w.all_pages(since=T0 - timedelta(hours=1), limit=7, cursor=first.next_cursor)
    seen = ids(first.records) + ids(rest)
    assert len(seen) == len(set(seen)), "a record was repeated"
    touched = {"stu-00000", "stu-00001", "stu-00002", "stu-00030", "stu-00031", "stu-00035"}
    untouched = {f"stu-{n:05d}" for n in range(40)} - touched
    assert untouched <= set(seen), "a record that existed throughout was skipped"
    # Changed after the snapshot and not listed before it: left to the next sync.
    assert not {"stu-00030", "stu-00031"} & set(seen)
    # The next sync, from before the upload, picks up what changed after the snapshot.
    resync = w.all_pages(since=later - timedelta(seconds=1))
    assert sorted(ids(resync)) == sorted(touched)


def test_cursors_are_opaque_bound_and_tamper_evident(w: Warm) -> None:
    w.apply(students(5))
    w.apply(students(5), area="staff.basic")
    cursor = w.page(limit=2).next_cursor
    assert cursor is not None
    assert "stu" not in cursor
    assert "full" not in cursor
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    for bad in (tampered, "not-a-cursor", "", "x" * 1000):
        with pytest.raises(InvalidCursorError):
            w.page(cursor=bad)
    with pytest.raises(InvalidCursorError):
        w.page(cursor=cursor, area="staff.basic")
    with pytest.raises(InvalidCursorError):
        w.page(cursor=cursor, since=T0)  # issued for a full listing
    assert len(w.page(cursor=cursor, limit=10).records) == 3


def test_limit_is_bounded(w: Warm) -> None:
    w.apply(students(1))
    for limit in (0, warm.MAX_LIMIT + 1):
        with pytest.raises(ValueError, match="limit"):
            w.page(limit=limit)


def test_a_large_batch_applies_and_reads_back(w: Warm) -> None:
    result = w.apply(students(2500))
    assert result.applied == 2500
    assert len(w.all_pages(limit=1000)) == 2500
    again = w.apply(students(2500), at=T0 + timedelta(hours=1))
    assert (again.applied, again.unchanged) == (0, 2500)
