"""The synthetic MIS over time: determinism, and the deltas `advance` produces."""

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
import pytest

from agents.mis import AdapterError
from agents.mis.synthetic import Phase, SyntheticMis

DAY = date(2025, 11, 19)  # a Wednesday in the autumn term
Rec = dict[str, Any]
Snapshot = dict[str, dict[str, Rec]]


def snapshot(mis: SyntheticMis) -> Snapshot:
    return {area: {r["id"]: r for r in mis.extract(area)} for area in sorted(mis.areas())}


def dump(mis: SyntheticMis) -> bytes:
    return orjson.dumps({area: list(mis.extract(area)) for area in sorted(mis.areas())})


@dataclass
class Delta:
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff(before: Snapshot, after: Snapshot) -> dict[str, Delta]:
    out: dict[str, Delta] = {}
    for area in before:
        old, new = before[area], after[area]
        out[area] = Delta(
            added=new.keys() - old.keys(),
            removed=old.keys() - new.keys(),
            changed={k for k in old.keys() & new.keys() if old[k] != new[k]},
        )
    return out


# --- determinism -----------------------------------------------------------------------


@pytest.mark.parametrize(("phase", "pupils"), [("primary", 200), ("secondary", 1200)])
def test_same_seed_gives_byte_identical_records(phase: Phase, pupils: int) -> None:
    one = SyntheticMis(seed=42, pupils=pupils, phase=phase, day=DAY)
    two = SyntheticMis(seed=42, pupils=pupils, phase=phase, day=DAY)
    assert dump(one) == dump(two)


def test_different_seeds_give_different_schools() -> None:
    one = SyntheticMis(seed=1, pupils=200, phase="primary", day=DAY)
    two = SyntheticMis(seed=2, pupils=200, phase="primary", day=DAY)
    first, second = snapshot(one), snapshot(two)
    assert first["school.details"] != second["school.details"]
    assert first["students.basic"] != second["students.basic"]
    upns = {r["upn"] for r in first["students.basic"].values()}
    assert upns.isdisjoint(r["upn"] for r in second["students.basic"].values())


def test_advancing_is_deterministic_too() -> None:
    one = SyntheticMis(seed=9, pupils=300, phase="secondary", day=DAY)
    two = SyntheticMis(seed=9, pupils=300, phase="secondary", day=DAY)
    one.advance(3)
    two.advance(3)
    assert dump(one) == dump(two)


def test_advancing_in_steps_equals_advancing_at_once() -> None:
    steps = SyntheticMis(seed=9, pupils=300, phase="primary", day=DAY)
    once = SyntheticMis(seed=9, pupils=300, phase="primary", day=DAY)
    for _ in range(6):
        steps.advance()
    once.advance(6)
    assert steps.day == once.day == date(2025, 11, 25)
    assert dump(steps) == dump(once)


def test_extracting_does_not_change_what_comes_next() -> None:
    read = SyntheticMis(seed=4, pupils=150, phase="primary", day=DAY)
    unread = SyntheticMis(seed=4, pupils=150, phase="primary", day=DAY)
    dump(read)
    read.advance()
    unread.advance()
    assert dump(read) == dump(unread)


# --- one school day --------------------------------------------------------------------


@pytest.fixture(scope="module", params=["primary", "secondary"])
def day_delta(request: pytest.FixtureRequest) -> tuple[Snapshot, Snapshot, dict[str, Delta]]:
    pupils = 200 if request.param == "primary" else 1200
    mis = SyntheticMis(seed=21, pupils=pupils, phase=request.param, day=DAY)
    before = snapshot(mis)
    mis.advance()
    assert mis.day == date(2025, 11, 20)
    after = snapshot(mis)
    return before, after, diff(before, after)


def test_a_school_day_admits_new_pupils(
    day_delta: tuple[Snapshot, Snapshot, dict[str, Delta]],
) -> None:
    _, after, delta = day_delta
    joiners = delta["students.basic"].added
    assert joiners
    for pupil in joiners:
        record = after["students.basic"][pupil]
        assert record["on_roll"]
        assert record["entry_date"] == "2025-11-20"
        for area in ("students.contact_details", "students.demographics", "students.photos"):
            assert pupil in delta[area].added
        linked = {s for c in after["contacts"].values() for s in c["student_ids"]}
        assert pupil in linked
    groups = after["groups"].values()
    assert all(any(p in g["student_ids"] for g in groups) for p in joiners)


def test_a_school_day_loses_leavers(day_delta: tuple[Snapshot, Snapshot, dict[str, Delta]]) -> None:
    before, after, delta = day_delta
    leavers = [
        pupil
        for pupil in delta["students.basic"].changed
        if before["students.basic"][pupil]["on_roll"]
        and not after["students.basic"][pupil]["on_roll"]
    ]
    assert leavers
    for pupil in leavers:
        assert after["students.basic"][pupil]["leaving_date"] == "2025-11-20"
        assert pupil in delta["students.photos"].removed  # photos are for pupils on roll
        assert all(pupil not in g["student_ids"] for g in after["groups"].values())
        assert all(pupil not in c["student_ids"] for c in after["contacts"].values())


def test_a_school_day_slides_the_register_window(
    day_delta: tuple[Snapshot, Snapshot, dict[str, Delta]],
) -> None:
    before, after, delta = day_delta
    marks = delta["attendance.marks"]
    assert {before["attendance.marks"][m]["date"] for m in marks.removed} == {"2025-11-13"}
    assert {after["attendance.marks"][m]["date"] for m in marks.added} == {"2025-11-20"}
    assert not marks.changed


def test_the_summary_counts_exactly_the_new_marks(
    day_delta: tuple[Snapshot, Snapshot, dict[str, Delta]],
) -> None:
    before, after, delta = day_delta
    new_marks = [after["attendance.marks"][m] for m in delta["attendance.marks"].added]
    possible: dict[str, int] = {}
    for m in new_marks:
        possible[m["student_id"]] = possible.get(m["student_id"], 0) + 1
    summaries_before = before["students.attendance_summary"]
    for pupil, summary in after["students.attendance_summary"].items():
        old = summaries_before.get(pupil, {"possible_marks": 0})
        assert summary["possible_marks"] - old["possible_marks"] == possible.get(pupil, 0)


def test_a_school_day_brings_behaviour_and_contact_changes(
    day_delta: tuple[Snapshot, Snapshot, dict[str, Delta]],
) -> None:
    _, after, delta = day_delta
    assert delta["behaviour"].added
    assert all(after["behaviour"][e]["date"] == "2025-11-20" for e in delta["behaviour"].added)
    assert delta["contacts"].changed or delta["contacts"].added
    assert delta["groups"].changed
    for area in ("attendance.codes", "school.details", "timetable"):
        assert delta[area].empty, area


def test_a_week_of_changes_touches_contacts_and_deletes_records() -> None:
    mis = SyntheticMis(seed=33, pupils=800, phase="secondary", day=DAY)
    before = snapshot(mis)
    mis.advance(7)
    delta = diff(before, snapshot(mis))
    assert delta["contacts"].changed
    assert delta["contacts"].removed  # the last pupil of a family left
    assert delta["students.contact_details"].changed  # a family moved house
    assert delta["exams"].added or delta["exams"].removed
    kinds = {
        kind
        for d in delta.values()
        for kind, ids in (("add", d.added), ("remove", d.removed), ("change", d.changed))
        if ids
    }
    assert kinds == {"add", "remove", "change"}


def test_weekends_bring_no_registers_or_admissions() -> None:
    mis = SyntheticMis(seed=5, pupils=200, phase="primary", day=date(2025, 11, 21))  # Friday
    before = snapshot(mis)
    mis.advance()
    delta = diff(before, snapshot(mis))
    for area in ("attendance.marks", "students.basic", "behaviour"):
        assert delta[area].empty, area
    assert delta["contacts"].changed or delta["students.contact_details"].changed


def test_advance_stops_at_the_end_of_the_academic_year() -> None:
    mis = SyntheticMis(seed=5, pupils=50, phase="primary", day=date(2026, 8, 30))
    mis.advance()
    with pytest.raises(AdapterError, match="academic year"):
        mis.advance()
    assert mis.day == date(2026, 8, 31)


def test_advance_refuses_negative_days() -> None:
    mis = SyntheticMis(seed=5, pupils=50, phase="primary", day=DAY)
    with pytest.raises(ValueError, match="negative"):
        mis.advance(-1)
