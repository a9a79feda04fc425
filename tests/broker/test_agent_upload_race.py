"""Two deliveries of one batch racing, on SQLite and PostgreSQL: the second finds no batch
before it applies, then its record of the batch fails on the first's.  Its transaction is
rolled back whole, and it answers as the first did (or 409, if its content differs)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session

from broker.agenthub import ingest as ingest_module
from broker.clock import FrozenClock
from broker.resources import Resources
from broker.settings import Settings
from cache import repository as repo
from cache.models import cached_areas
from tests.broker.test_agent_api import auth, resources, school, upload_body

__all__ = ["resources", "school"]  # fixtures, used by name


@pytest.fixture
def settings(settings_on_each_database: Settings) -> Settings:
    return settings_on_each_database


class Race:
    """The earlier-batch lookup, made to miss once when armed: as when the first delivery
    commits just after the second looked.  `looked` is every lookup since arming."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.looked: list[str] = []
        real = ingest_module._earlier

        def lookup(session: Session, batch_id: str) -> Any:
            if not self.armed:
                return real(session, batch_id)
            self.looked.append(batch_id)
            return None if len(self.looked) == 1 else real(session, batch_id)

        monkeypatch.setattr(ingest_module, "_earlier", lookup)


@pytest.fixture
def race(monkeypatch: pytest.MonkeyPatch) -> Race:
    return Race(monkeypatch)


def stored(res: Resources, school_id: str) -> tuple[Any, ...]:
    """What an upload writes: the area's row, its records' states, the batch rows."""
    with res.engine.connect() as conn:
        area = conn.execute(
            select(cached_areas.c.updated_at, cached_areas.c.data_version, cached_areas.c.last_seq)
        ).one()
        states = repo.record_states(conn, school_id, "students.basic")
        batches = conn.execute(
            select(ingest_module._BATCHES.c.batch_id, ingest_module._BATCHES.c.received_at)
        ).all()
    return tuple(area), states, batches


def delivered_once(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    race: Race,
) -> tuple[dict[str, Any], dict[str, Any], tuple[Any, ...]]:
    """The first delivery applied: its body, its answer and what it stored.  Then the race
    is armed, and the clock moves on so that a write the rollback missed would show."""
    body = upload_body(clock, records=[{"id": "stu-1", "forename": "Amara"}])
    first = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert first.status_code == 200, first.text
    before = stored(resources, school["school_id"])
    race.armed = True
    clock.advance(timedelta(minutes=1))
    return body, first.json(), before


def test_the_second_delivery_answers_as_the_first_and_changes_nothing(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    race: Race,
) -> None:
    body, first, before = delivered_once(client, school, resources, clock, race)
    again = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert again.status_code == 200, again.text
    assert again.json() == first
    assert race.looked == [body["batch_id"], body["batch_id"]]  # missed, then found
    assert stored(resources, school["school_id"]) == before


def test_a_racing_delivery_with_other_content_is_refused_and_changes_nothing(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    race: Race,
) -> None:
    body, _, before = delivered_once(client, school, resources, clock, race)
    body["records"] = [{"id": "stu-1", "forename": "Other"}, {"id": "stu-2", "forename": "New"}]
    refused = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert refused.status_code == 409, refused.text
    assert "different content" in refused.json()["detail"]
    assert race.looked == [body["batch_id"], body["batch_id"]]
    assert stored(resources, school["school_id"]) == before  # its records were rolled back
