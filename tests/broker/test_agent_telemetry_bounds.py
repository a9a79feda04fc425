"""Agent telemetry is cut to size at the broker, never refused, and the admin view pages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from broker.agenthub import commands
from broker.agenthub.models import CommandKind
from broker.agenthub.telemetry import (
    MARKER,
    MAX_ERRORS,
    MAX_LIST_ITEMS,
    MAX_STRING_BYTES,
    MAX_TOTAL_BYTES,
    bound_telemetry,
)
from broker.clock import FrozenClock
from broker.db import session_scope
from tests.support.admin import World, build_world, cheap_argon2

MB = 1024 * 1024
BODY_LIMIT = 64 * 1024


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    return world


def beat(world: World, telemetry: dict[str, Any]) -> int:
    body = orjson.dumps(telemetry)
    headers = {"Authorization": f"Bearer {world.agent_key}", "Content-Type": "application/json"}
    response = world.client.post("/v1/agent/heartbeat", content=body, headers=headers)
    return int(response.status_code)


def assert_bounded(telemetry: dict[str, Any]) -> None:
    assert len(orjson.dumps(telemetry)) <= MAX_TOTAL_BYTES
    assert len(telemetry["errors"]) <= MAX_ERRORS
    assert all(len(e.encode()) <= MAX_STRING_BYTES for e in telemetry["errors"])


def test_fifty_errors_of_a_megabyte_are_cut_to_twenty_short_ones_with_a_marker() -> None:
    stored = bound_telemetry({"agent_version": "1.4.0", "errors": ["e" * MB] * 50})
    assert_bounded(stored)
    assert len(stored["errors"]) == MAX_ERRORS
    assert stored["errors"][0].endswith(MARKER)
    assert stored["errors"][-1] == f"{MARKER} 31 more"
    assert stored["agent_version"] == "1.4.0"


def test_unknown_fields_are_bounded_and_the_largest_dropped_to_fit() -> None:
    telemetry = {
        "agent_version": "v" * 5000,
        "errors": [],
        "samples": list(range(1000)),
        "blob": {f"k{i}": "x" * 2000 for i in range(300)},
    }
    stored = bound_telemetry(telemetry)
    assert_bounded(stored)
    assert stored["agent_version"].endswith(MARKER)
    assert len(stored["samples"]) == MAX_LIST_ITEMS
    assert "blob" not in stored
    assert "blob" in stored["_truncated"]


def test_small_telemetry_is_stored_as_sent() -> None:
    telemetry = {"agent_version": "1.4.0", "errors": ["SIMS timeout"], "cpu_percent": 3.5}
    assert bound_telemetry(telemetry) == telemetry


def test_heartbeats_with_huge_errors_are_kept_small_and_never_refused(world: World) -> None:
    # One body of 50 x 1 MB is over the edge's body limit: refused before any parsing.
    assert beat(world, {"errors": ["e" * MB] * 50}) == 413
    # So the same flood comes in bodies under the limit: many errors, then one huge one.
    many = {"errors": [f"{i}:" + "m" * 1200 for i in range(50)]}
    huge = {"agent_version": "v" * 20_000, "errors": ["h" * (BODY_LIMIT - 30_000)]}
    for telemetry in (many, huge, many):
        assert len(orjson.dumps(telemetry)) < BODY_LIMIT
        assert beat(world, telemetry) == 200
        health = world.call("GET", "/agent")
        assert health.status_code == 200
        assert len(health.content) < 2 * MAX_TOTAL_BYTES
        [agent] = health.json()["agents"]
        assert_bounded(agent["telemetry"])
        assert agent["errors"] == agent["telemetry"]["errors"]
    assert beat(world, huge) == 200
    [agent] = world.call("GET", "/agent").json()["agents"]
    assert agent["telemetry"]["agent_version"].endswith(MARKER)
    assert agent["errors"][0].endswith(MARKER)


def test_the_admin_view_shows_the_latest_commands_a_page_at_a_time(world: World) -> None:
    with session_scope(world.resources.engine) as session:
        for i in range(60):
            commands.queue_command(
                session,
                school_id=world.school_id,
                kind=CommandKind.EXTRACT,
                args={"areas": ["groups"], "n": i},
                reason="test",
                now=world.now(),
            )
            world.clock.advance(commands.RESEND_AFTER / 100)
    default = world.call("GET", "/agent").json()["commands"]
    assert len(default) == 50
    assert default[0]["args"]["n"] == 59  # newest first
    assert [c["args"]["n"] for c in world.call("GET", "/agent?limit=3").json()["commands"]] == [
        59,
        58,
        57,
    ]
    assert len(world.call("GET", "/agent?limit=500").json()["commands"]) == 60
    assert world.call("GET", "/agent?limit=501").status_code == 422
    assert world.call("GET", "/agent?limit=0").status_code == 422


def test_an_integer_past_64_bits_is_kept_as_text() -> None:
    from broker.agenthub.telemetry import bound_telemetry

    huge = 2**70
    out = bound_telemetry({"memory": {"rss": huge, "ok": 5}, "x": [-(2**64)]})
    assert out["memory"] == {"rss": str(huge), "ok": 5}
    assert out["x"] == [str(-(2**64))]
