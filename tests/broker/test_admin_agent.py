"""The admin's view of the school's agent, and "refresh now"."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from broker.clock import FrozenClock, rfc3339
from tests.support.admin import World, build_world, cheap_argon2


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    return world


def agent_headers(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.agent_key}"}


def test_agent_health_shows_heartbeat_areas_and_silence(world: World) -> None:
    health = world.call("GET", "/agent").json()
    assert health["school_id"] == world.school_id
    [agent] = health["agents"]
    assert agent["silent"] is True  # never heard from
    assert agent["last_heartbeat_at"] is None

    telemetry = {"agent_version": "1.4.0", "os": "Windows Server 2022", "errors": ["SIMS timeout"]}
    assert (
        world.client.post(
            "/v1/agent/heartbeat", json=telemetry, headers=agent_headers(world)
        ).status_code
        == 200
    )
    body = {
        "batch_id": str(uuid.uuid4()),
        "area": "groups",
        "mode": "full",
        "extracted_at": rfc3339(world.now()),
        "records": [{"id": "grp-1", "name": "8B"}],
    }
    assert (
        world.client.post("/v1/agent/uploads", json=body, headers=agent_headers(world)).status_code
        == 200
    )

    health = world.call("GET", "/agent").json()
    [agent] = health["agents"]
    assert agent["silent"] is False
    assert agent["telemetry"]["agent_version"] == "1.4.0"
    assert agent["errors"] == ["SIMS timeout"]
    [area] = health["areas"]
    assert area["area"] == "groups"
    assert area["records"] == 1
    assert area["stale"] is False

    world.clock.advance(timedelta(minutes=16))
    assert world.call("GET", "/agent").json()["agents"][0]["silent"] is True


def test_refresh_now_queues_an_extraction_for_the_agent(world: World) -> None:
    response = world.call("POST", "/refresh", json={"areas": ["students.basic", "contacts"]})
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["areas"] == ["contacts", "students.basic"]
    beat = world.client.post("/v1/agent/heartbeat", json={}, headers=agent_headers(world)).json()
    assert [c["id"] for c in beat["commands"]] == [queued["command_id"]]
    bad = world.call("POST", "/refresh", json={"areas": ["students.shoe_size"]})
    assert bad.status_code == 422
    assert world.call("POST", "/refresh", json={"areas": []}).status_code == 422


def test_refresh_needs_an_admin(world: World) -> None:
    response = world.client.post(
        "/v1/admin/refresh", json={"areas": ["groups"]}, headers=agent_headers(world)
    )
    assert response.status_code in (401, 403)
