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


@pytest.fixture
def missed_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The earlier-batch lookup misses once, as when the first delivery commits just after
    the second looked: the lookups made, in order."""
    looked: list[str] = []
    real = ingest_module._earlier

    def lookup(session: Session, batch_id: str) -> Any:
        looked.append(batch_id)
        return None if len(looked) == 1 else real(session, batch_id)

    monkeypatch.setattr(ingest_module, "_earlier", lookup)
    return looked


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


def test_the_second_delivery_answers_as_the_first_and_changes_nothing(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    missed_once: list[str],
) -> None:
    body = upload_body(clock, records=[{"id": "stu-1", "forename": "Amara"}])
    missed_once.append("first")  # the first delivery's lookup is a real one
    first = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert first.status_code == 200, first.text
    before = stored(resources, school["school_id"])
    missed_once.clear()
    clock.advance(timedelta(minutes=1))  # so a write the rollback missed would show
    again = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert missed_once == [body["batch_id"], body["batch_id"]]  # missed, then found
    assert stored(resources, school["school_id"]) == before


def test_a_racing_delivery_with_other_content_is_refused_and_changes_nothing(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    missed_once: list[str],
) -> None:
    body = upload_body(clock, records=[{"id": "stu-1", "forename": "Amara"}])
    missed_once.append("first")
    assert client.post("/v1/agent/uploads", json=body, headers=auth(school)).status_code == 200
    before = stored(resources, school["school_id"])
    missed_once.clear()
    clock.advance(timedelta(minutes=1))
    body["records"] = [{"id": "stu-1", "forename": "Other"}, {"id": "stu-2", "forename": "New"}]
    refused = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert refused.status_code == 409, refused.text
    assert "different content" in refused.json()["detail"]
    assert len(missed_once) == 2
    assert stored(resources, school["school_id"]) == before  # its records were rolled back
