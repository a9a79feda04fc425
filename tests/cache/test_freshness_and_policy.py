"""Freshness edges, the caching policy and the refresh job (pure logic, then the job)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from broker.clock import FrozenClock
from broker.db import session_scope
from cache import tasks
from cache.freshness import expires_at, is_expired, is_stale, purge_after, rfc3339
from cache.models import CacheTier
from cache.policy import areas_to_refresh, needs_refresh, should_cache
from cache.refresh import ExtractRequest, InMemoryRefreshRequester
from cache.repository import AreaState
from cache.service import CacheService
from tests.cache.conftest import SCHOOL, students
from tests.conftest import T0

SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(("area", "days"), [("students.basic", 1), ("students.photos", 7)])
def test_validity_stale_and_purge_edges(area: str, days: int) -> None:
    valid_until = T0 + timedelta(days=days)
    assert expires_at(area, T0) == valid_until
    assert not is_stale(area, T0, valid_until - SECOND)
    assert is_stale(area, T0, valid_until)
    assert purge_after(area, T0) == valid_until + timedelta(days=30)
    assert not is_expired(area, T0, valid_until + timedelta(days=30))
    assert is_expired(area, T0, valid_until + timedelta(days=30) + SECOND)


def test_rfc3339_is_utc_with_a_z() -> None:
    assert rfc3339(T0) == "2026-11-23T09:00:00Z"


def test_should_cache_core_always_and_others_when_consented_and_asked() -> None:
    assert should_cache("students.basic", set(), set())
    assert not should_cache("students.sen", {"students.sen"}, set())
    assert not should_cache("students.sen", set(), {"students.sen"})
    assert should_cache("students.sen", {"students.sen"}, {"students.sen"})


def state(area: str = "students.sen", **changes: Any) -> AreaState:
    values: dict[str, Any] = {
        "school_id": SCHOOL,
        "area": area,
        "as_of": T0,
        "purge_after": purge_after(area, T0),
        "tier": CacheTier.WARM,
        "data_version": 1,
        "last_seq": 1,
        "record_count": 1,
        "created_at": T0,
        "updated_at": T0,
        "last_read_at": None,
        "last_requested_at": T0,
        "refresh_requested_at": None,
        "cold_blob_key": None,
    }
    values.update(changes)
    return AreaState(**values)


def test_needs_refresh_rules() -> None:
    stale_at = T0 + timedelta(days=1)
    ok = {"students.sen"}
    assert not needs_refresh(state(), ok, stale_at - SECOND, 30)  # still fresh
    assert needs_refresh(state(), ok, stale_at, 30)
    assert not needs_refresh(state(), set(), stale_at, 30)  # nobody may read it
    unused = state(last_requested_at=stale_at - timedelta(days=30) - SECOND)
    assert not needs_refresh(unused, ok, stale_at, 30)
    just_asked = state(refresh_requested_at=stale_at - timedelta(minutes=59))
    assert not needs_refresh(just_asked, ok, stale_at, 30)
    assert needs_refresh(
        state(refresh_requested_at=stale_at - timedelta(hours=1)), ok, stale_at, 30
    )
    assert needs_refresh(state(as_of=None), ok, T0, 30)  # asked for, never arrived


def test_areas_to_refresh_groups_by_school() -> None:
    now = T0 + timedelta(days=2)
    rows = [
        state("students.sen"),
        state("behaviour"),
        state("exams", school_id="sch_0002"),
        state("students.basic"),  # not consented
    ]
    consented = {SCHOOL: {"students.sen", "behaviour"}, "sch_0002": {"exams"}}
    assert areas_to_refresh(rows, lambda s: consented[s], now, 30) == {
        SCHOOL: ["behaviour", "students.sen"],
        "sch_0002": ["exams"],
    }


def test_refresh_job_asks_once_per_hour_for_stale_used_areas(
    engine: Engine, service: CacheService, deps: tasks.CacheDeps, clock: FrozenClock
) -> None:
    with session_scope(engine) as session:
        service.apply_batch(
            session,
            school_id=SCHOOL,
            area="students.basic",
            mode="full",
            records=students(2),
            deleted=[],
            extracted_at=T0,
            now=T0,
        )
        service.mark_requested(session, SCHOOL, "students.basic", T0)
        service.mark_requested(session, SCHOOL, "behaviour", T0)  # never cached yet
    requester = InMemoryRefreshRequester()
    consented = {"students.basic", "behaviour"}
    clock.set(T0 + timedelta(hours=2))
    assert tasks.refresh_stale(deps, requester, lambda _: consented) == {SCHOOL: ["behaviour"]}
    clock.set(T0 + timedelta(days=1))
    assert tasks.refresh_stale(deps, requester, lambda _: consented) == {
        SCHOOL: ["behaviour", "students.basic"]
    }
    assert tasks.refresh_stale(deps, requester, lambda _: consented) is None  # same slot
    clock.set(T0 + timedelta(days=1, minutes=30))
    assert tasks.refresh_stale(deps, requester, lambda _: consented) == {}  # asked < 1 h ago
    assert requester.requests == [
        ExtractRequest(SCHOOL, ("behaviour",), "stale"),
        ExtractRequest(SCHOOL, ("behaviour", "students.basic"), "stale"),
    ]
    clock.set(T0 + timedelta(days=31))  # nobody asked for 31 days
    assert tasks.refresh_stale(deps, requester, lambda _: consented) == {}
