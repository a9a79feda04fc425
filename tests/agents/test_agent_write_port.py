"""The MIS adapters' write port: idempotent per record key, durable, and absent where the
MIS cannot take writes."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from agents.mis.base import WriteRecord, write_areas
from agents.mis.csv_adapter import CsvMis
from agents.mis.csv_imports import import_file
from agents.mis.oneroster import OneRosterMis
from agents.mis.synthetic import SyntheticMis

DAY = date(2025, 11, 19)


def mark(pupil: str, mark: str = "B") -> dict[str, object]:
    return {"student_id": pupil, "date": DAY.isoformat(), "session": "PM", "mark": mark}


def test_the_synthetic_mis_applies_a_key_once_and_its_next_extract_shows_it(
    tmp_path: Path,
) -> None:
    mis = SyntheticMis(seed=3, pupils=20, phase="primary", day=DAY, write_store=tmp_path / "m.db")
    pupil = next(iter(mis.extract("students.basic")))["id"]
    records = [WriteRecord("wrt_1:0", 0, mark(pupil)), WriteRecord("wrt_1:1", 1, {
        "student_id": pupil, "type": "Merit", "date": DAY.isoformat(), "points": 2})]  # fmt: skip
    first = list(mis.apply_write("attendance.marks", "wrt_1", records[:1]))
    again = list(mis.apply_write("attendance.marks", "wrt_1", records[:1]))
    assert first == again
    assert first[0].status == "applied"
    assert mis.writes.count() == 1
    marks = {r["id"]: r for r in mis.extract("attendance.marks")}
    assert marks[str(first[0].mis_id)]["mark"] == "B"
    (event,) = mis.apply_write("behaviour", "wrt_1", records[1:])
    assert {r["id"] for r in mis.extract("behaviour")} >= {event.mis_id}
    # A new process of the same MIS (same store) still has them.
    reopened = SyntheticMis(seed=3, pupils=20, phase="primary", day=DAY,
                            write_store=tmp_path / "m.db")  # fmt: skip
    assert reopened.writes.count() == 2
    assert write_areas(reopened) == {"attendance.marks", "behaviour"}


def test_the_csv_adapter_writes_each_write_as_one_import_file_durably_once(
    tmp_path: Path,
) -> None:
    mis = CsvMis(tmp_path)
    records = [WriteRecord(f"wrt_9:{i}", i, mark(f"stu-{i}")) for i in range(3)]
    outcomes = list(mis.apply_write("attendance.marks", "wrt_9", records))
    assert [(o.index, o.status, o.mis_id) for o in outcomes] == [
        (0, "applied", None), (1, "applied", None), (2, "applied", None)
    ]  # fmt: skip
    target = import_file(tmp_path, "attendance.marks", "wrt_9")
    assert [p.name for p in (tmp_path / "imports").iterdir()] == [target.name]  # no temp file
    with target.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["idempotency_key"] for r in rows] == ["wrt_9:0", "wrt_9:1", "wrt_9:2"]
    assert [r["student_id"] for r in rows] == ["stu-0", "stu-1", "stu-2"]
    written = target.stat().st_mtime_ns
    assert len(list(mis.apply_write("attendance.marks", "wrt_9", records))) == 3
    assert target.stat().st_mtime_ns == written  # applied again: the file is not rewritten
    assert write_areas(mis) == {"attendance.marks", "behaviour"}


def test_the_oneroster_adapter_cannot_write() -> None:
    assert not hasattr(OneRosterMis, "apply_write")
