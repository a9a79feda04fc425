"""Refreshing stale areas: the agent-command port and the job that uses it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session

from cache import repository as repo
from cache.freshness import OUT_OF_DATE_RETENTION
from cache.policy import areas_to_refresh


class RefreshRequester(Protocol):
    """Queues an `extract` command for a school's agent (the broker's agent-command table)."""

    def request_extract(self, school_id: str, areas: list[str], reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ExtractRequest:
    school_id: str
    areas: tuple[str, ...]
    reason: str


class InMemoryRefreshRequester:
    """A `RefreshRequester` that only remembers what it was asked, for tests and tools."""

    def __init__(self) -> None:
        self.requests: list[ExtractRequest] = []
        self._lock = threading.Lock()

    def request_extract(self, school_id: str, areas: list[str], reason: str) -> None:
        with self._lock:
            self.requests.append(ExtractRequest(school_id, tuple(areas), reason))


def refresh_stale(
    session: Session,
    requester: RefreshRequester,
    *,
    consented: Callable[[str], Collection[str]],
    now: datetime,
    unused_area_days: float,
) -> dict[str, list[str]]:
    """Ask agents for every stale area a consented partner still uses; return what was asked.

    Candidates come through the purge_after index (stale means purge_after is within the
    next 30 days) plus areas asked for but never cached, so the cost follows the stale
    areas, not the whole cache.
    """
    conn = session.connection()
    candidates = repo.areas_purged_before(conn, now + OUT_OF_DATE_RETENTION)
    candidates += repo.uncached_requested(conn, now - timedelta(days=unused_area_days))
    chosen = areas_to_refresh(candidates, consented, now, unused_area_days)
    for school_id, areas in chosen.items():
        requester.request_extract(school_id, areas, "stale")
        for area in areas:
            repo.update_area(conn, school_id, area, refresh_requested_at=now)
    return chosen
