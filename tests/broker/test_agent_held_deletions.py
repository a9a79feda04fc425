"""The broker's mass-deletion guard: held uploads, their counts, and confirmation."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agents.deletion_guard import DeletionLimit, holds
from broker.clock import FrozenClock, rfc3339
from tests.support.admin import World, build_world, cheap_argon2

AREA = "students.basic"


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    return world


def upload(world: World, ids: list[str], mode: str = "full", **extra: Any) -> Any:
    world.clock.advance(timedelta(minutes=1))
    body = {
        "batch_id": str(uuid.uuid4()),
        "area": AREA,
        "mode": mode,
        "extracted_at": rfc3339(world.now()),
        "records": [{"id": i, "forename": "N"} for i in ids],
        "deleted": [],
        **extra,
    }
    headers = {"Authorization": f"Bearer {world.agent_key}"}
    return world.client.post("/v1/agent/uploads", json=body, headers=headers)


def held_ids(world: World) -> set[str]:
    response = world.call("GET", "/agent")
    assert response.status_code == 200
    return {h["area"] for h in response.json()["held_deletions"]}


PUPILS = [f"stu-{i:03d}" for i in range(100)]


@pytest.mark.parametrize(
    ("records", "deleting", "held"),
    [(100, 10, False), (100, 11, True), (40, 5, False), (40, 6, True), (3, 3, True),
     (3, 2, False), (0, 0, False), (100, 0, False)],
)  # fmt: skip
def test_the_default_threshold(records: int, deleting: int, held: bool) -> None:
    assert holds(DeletionLimit(), records, deleting) is held


def test_an_emptied_area_is_held_with_counts_and_nothing_is_deleted(world: World) -> None:
    assert upload(world, PUPILS).status_code == 200
    refused = upload(world, [])
    assert refused.status_code == 409
    problem = refused.json()
    assert problem["type"].endswith("/mass-deletion-held")
    assert (problem["area"], problem["records"], problem["deleting"]) == (AREA, 100, 100)
    agent = world.call("GET", "/agent").json()
    [hold] = agent["held_deletions"]
    assert (hold["area"], hold["records"], hold["deleting"], hold["held_by"]) == (
        AREA,
        100,
        100,
        "broker",
    )
    assert hold["confirmed_at"] is None
    # A delta that deletes too much is held as well; a small one goes through.
    deltas = upload(world, [], mode="delta", deleted=PUPILS[:50])
    assert deltas.status_code == 409
    small = upload(world, [], mode="delta", deleted=PUPILS[:5])
    assert small.status_code == 200
    assert small.json()["deleted"] == 5


def test_a_confirmation_lets_the_next_upload_through_once(world: World) -> None:
    assert upload(world, PUPILS).status_code == 200
    assert upload(world, PUPILS[:20]).status_code == 409
    assert world.call("POST", "/agent/held-deletions/contacts/confirm").status_code == 404
    confirmed = world.call("POST", f"/agent/held-deletions/{AREA}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["deleting"] == 80
    commands = world.call("GET", "/agent").json()["commands"]
    assert commands[0]["args"] == {"areas": [AREA], "confirm_deletion": True}
    applied = upload(world, PUPILS[:20])
    assert applied.status_code == 200
    assert applied.json()["deleted"] == 80
    assert held_ids(world) == set()
    # Once: the next mass deletion is held again.
    assert upload(world, []).status_code == 409


def test_the_agents_own_threshold_is_honoured(world: World) -> None:
    assert upload(world, PUPILS).status_code == 200
    loose: dict[str, Any] = {"deletion_limit": {"max_share": 0.5, "max_count": 5}}
    assert upload(world, PUPILS[:60], **loose).status_code == 200
    assert upload(world, PUPILS[:20], **loose).status_code == 409
    bad = upload(world, PUPILS[:20], deletion_limit={"max_share": 2, "max_count": 5})
    assert bad.status_code == 422


def test_operator_cli_shows_and_confirms(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.cli.main import app

    assert upload(world, PUPILS).status_code == 200
    assert upload(world, []).status_code == 409
    runner = CliRunner()
    settings = world.resources.settings
    monkeypatch.setenv("MISBROKER_DATA_DIR", str(settings.broker.data_dir))
    monkeypatch.setenv("MISBROKER_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("MISBROKER_ENVIRONMENT", "test")
    status = runner.invoke(app, ["agent", "status", world.school_id])
    assert status.exit_code == 0, status.output
    assert f"{AREA}  HELD deletion (broker): 100 of 100 records" in status.output
    done = runner.invoke(app, ["agent", "confirm-deletion", world.school_id, AREA, "--json"])
    assert done.exit_code == 0, done.output
    assert upload(world, []).status_code == 200
