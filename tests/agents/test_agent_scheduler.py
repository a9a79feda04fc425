"""The scheduler, pure: nightly window with per-school jitter, periodic areas, weekly full."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agents.config import parse_schedules
from agents.scheduler import due, nightly_offset, nightly_window, wants_full
from agents.state import AreaStatus
from consent.areas import CATALOGUE, CORE_AREAS

LONDON = ZoneInfo("Europe/London")
SCHEDULES = parse_schedules({})
ALL = frozenset(CATALOGUE)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=LONDON)


def extracted(when: datetime, full: datetime | None = None) -> dict[str, AreaStatus]:
    return {
        area: AreaStatus(area, last_full_at=full or when, last_extracted_at=when, last_ok=True)
        for area in CATALOGUE
    }


def due_areas(now: datetime, statuses: dict[str, AreaStatus], seed: int = 0) -> set[str]:
    return {
        d.area for d in due(now, SCHEDULES, statuses, available=ALL, jitter_seed=seed, tz=LONDON)
    }


def test_offsets_differ_per_school_and_stay_in_the_first_60_percent() -> None:
    offsets = {nightly_offset(SCHEDULES.nightly, seed) for seed in range(0, 10_000, 7)}
    assert len(offsets) > 100
    assert max(offsets) < timedelta(minutes=180)  # 60% of 01:00-06:00
    assert min(offsets) >= timedelta(0)


def test_core_areas_are_due_once_inside_the_jittered_window() -> None:
    seed = 95  # 95 minutes into the window: 02:35
    yesterday = extracted(at("2025-11-18T02:40"))
    assert due_areas(at("2025-11-19T02:30"), yesterday, seed) == set()
    assert due_areas(at("2025-11-19T02:35"), yesterday, seed) == CORE_AREAS
    done = extracted(at("2025-11-19T02:36"))
    assert due_areas(at("2025-11-19T03:00"), done, seed) == set()
    assert due_areas(at("2025-11-19T06:00"), yesterday, seed) == set()  # window closed


def test_a_window_across_midnight() -> None:
    schedules = parse_schedules({"nightly": {"start": "23:00", "end": "02:00"}})
    window = nightly_window(at("2025-11-19T01:30"), schedules.nightly, 0, LONDON)
    assert window is not None
    assert window[0] == at("2025-11-18T23:00")
    assert nightly_window(at("2025-11-19T02:30"), schedules.nightly, 0, LONDON) is None


def test_attendance_and_behaviour_run_every_n_minutes_in_school_hours() -> None:
    last = extracted(at("2025-11-19T10:00"))
    assert due_areas(at("2025-11-19T10:29"), last) == set()
    assert due_areas(at("2025-11-19T10:30"), last) == {
        "attendance.marks",
        "students.attendance_summary",
    }
    assert due_areas(at("2025-11-19T11:00"), last) == {
        "attendance.marks",
        "students.attendance_summary",
        "behaviour",
    }
    assert due_areas(at("2025-11-19T18:00"), last) == set()  # after school
    assert due_areas(at("2025-11-22T11:00"), last) == set()  # Saturday


def test_a_schedule_can_be_switched_off() -> None:
    schedules = parse_schedules({"behaviour": {"every_minutes": 0}})
    last = extracted(at("2025-11-19T08:00"))
    got = due(at("2025-11-19T12:00"), schedules, last, available=ALL, jitter_seed=0, tz=LONDON)
    assert "behaviour" not in {d.area for d in got}


def test_never_extracted_areas_are_due_at_once_and_full() -> None:
    got = due(at("2025-11-19T14:00"), SCHEDULES, {}, available=ALL, jitter_seed=0, tz=LONDON)
    scheduled = CORE_AREAS | {"attendance.marks", "behaviour"}
    assert {d.area for d in got} == scheduled
    assert all(d.full and d.reason == "first" for d in got)


def test_only_areas_the_mis_provides() -> None:
    got = due(
        at("2025-11-19T14:00"),
        SCHEDULES,
        {},
        available=frozenset({"groups"}),
        jitter_seed=0,
        tz=LONDON,
    )
    assert [d.area for d in got] == ["groups"]


def test_a_failed_area_waits_before_it_is_tried_again() -> None:
    now = at("2025-11-19T14:00")
    failed = {
        "groups": AreaStatus("groups", last_ok=False, last_attempt_at=now - timedelta(minutes=5))
    }
    assert "groups" not in due_areas(now, failed)
    assert "groups" in due_areas(now + timedelta(minutes=11), failed)


@pytest.mark.parametrize(
    ("now", "last_full", "needs_full", "expected"),
    [
        ("2025-11-19T02:00", "2025-11-16T02:00", False, False),  # Wednesday, full on Sunday
        ("2025-11-23T02:00", "2025-11-16T02:00", False, True),  # Sunday: weekly full
        ("2025-11-23T03:00", "2025-11-23T02:00", False, False),  # already done this Sunday
        ("2025-11-19T02:00", "2025-11-10T02:00", False, True),  # a week was missed
        ("2025-11-19T02:00", "2025-11-18T02:00", True, True),  # broker copy may differ
    ],
)
def test_full_upload_rules(now: str, last_full: str, needs_full: bool, expected: bool) -> None:
    status = AreaStatus("groups", last_full_at=at(last_full), needs_full=needs_full)
    assert wants_full(at(now), status, SCHEDULES.weekly_full_day, LONDON) is expected


def test_times_are_school_local_across_the_clock_change() -> None:
    # 01:30 London in summer is 00:30 UTC: inside the window by the school's clock.
    summer = datetime(2025, 6, 11, 0, 30, tzinfo=UTC)
    assert nightly_window(summer, SCHEDULES.nightly, 0, LONDON) is not None
    assert nightly_window(summer, SCHEDULES.nightly, 0, UTC) is None


def test_an_area_whose_broker_copy_may_differ_is_resynced_soon_with_a_full() -> None:
    now = at("2025-11-19T14:00")
    status = AreaStatus(
        "groups", last_full_at=now, last_extracted_at=now, last_ok=True, needs_full=True
    )
    assert "groups" not in due_areas(now + timedelta(minutes=10), {"groups": status})
    got = due(
        now + timedelta(minutes=15), SCHEDULES, {"groups": status}, available=ALL,
        jitter_seed=0, tz=LONDON,
    )  # fmt: skip
    resync = next(d for d in got if d.area == "groups")
    assert resync.full
    assert resync.reason == "resync"
