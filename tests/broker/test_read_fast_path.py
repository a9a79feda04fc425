"""The partner read fast path through the real app: pages, tokens and decisions held in
process memory must never outlive the upload, revocation or rotation that ends them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis
from fastapi.testclient import TestClient

from broker.cli.main import run
from broker.clock import FrozenClock, rfc3339
from broker.partners.tokens import TokenCache, revoke_partner_tokens
from cache.edge import EdgeCache
from tests.broker.test_partner_api import STUDENTS, Partner, access_log, upload
from tests.support.admin import BASIC, CONTACTS, World, build_world, cheap_argon2

DATA_PATH = "/v1/schools/{school_id}/data/{area}"
HOT_PAGES = "mb:h:*"


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    # Until its listener has subscribed, a process trusts what it holds for a second only,
    # and the subscription itself clears it: start from the steady state.
    listener = world.runtime.listener
    deadline = time.monotonic() + 5
    while not listener.subscribed.is_set():
        assert time.monotonic() < deadline, "the invalidation listener did not subscribe"
        time.sleep(0.01)
    return world


@pytest.fixture
def partner(world: World) -> Partner:
    world.grant((BASIC, CONTACTS))
    upload(world, STUDENTS)
    return Partner(world)


def edge_of(world: World) -> EdgeCache:
    edge: EdgeCache = world.client.app.state.partner_reads.hot_reader.edge  # type: ignore[attr-defined]
    return edge


def data(world: World, area: str = BASIC) -> str:
    return f"/schools/{world.school_id}/data/{area}"


def make_held(world: World, partner: Partner, **kw: Any) -> httpx.Response:
    """Read until the page is held in process memory; the first read's response."""
    first: httpx.Response = partner.get(data(world), **kw)
    assert first.status_code == 200, first.text
    again = partner.get(data(world), **kw)  # the hot page, read from Redis and kept
    assert again.content == first.content
    edge = edge_of(world)
    assert edge.state(world.school_id, BASIC) is not None
    assert edge.page_bytes > 0
    return first


def names(response: httpx.Response) -> dict[str, str]:
    return {r["id"]: r["forename"] for r in response.json()["data"]}


# (a) ------------------------------------------------------------------------------------


def test_a_held_page_is_served_from_memory_with_the_same_bytes_and_logged_each_time(
    world: World, partner: Partner, redis_client: redis.Redis
) -> None:
    first = make_held(world, partner)
    hot = redis_client.keys(HOT_PAGES)
    assert len(hot) == 1
    redis_client.delete(*hot)  # behind its back: only this process's memory has the page
    third = partner.get(data(world), headers={"X-Request-Id": "req-fast-0003"})
    assert third.status_code == 200
    assert third.content == first.content
    for header in ("etag", "x-data-as-of", "x-data-stale", "cache-control", "content-type"):
        assert third.headers[header] == first.headers[header], header
    # Served from memory: the warm tier would have put the page back into Redis.
    assert redis_client.keys(HOT_PAGES) == []
    not_modified = partner.get(data(world), headers={"If-None-Match": first.headers["etag"]})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    entries = access_log(world)  # newest first
    assert [e["record_count"] for e in entries] == [0, 3, 3, 3]
    assert {e["decision"] for e in entries} == {"allowed"}
    assert entries[1]["request_id"] == "req-fast-0003"
    assert len({e["request_id"] for e in entries}) == 4


# (b) ------------------------------------------------------------------------------------


def test_an_upload_replaces_the_page_held_in_process_at_once(
    world: World, partner: Partner
) -> None:
    """The key consistency property: once an upload has been answered, no read in this
    process may serve the page it replaced, though the old page is held in memory."""
    first = make_held(world, partner)
    etag = first.headers["etag"]
    for round_ in range(1, 6):
        world.clock.advance(timedelta(minutes=1))
        renamed = [{**s, "forename": f"{s['forename']}-v{round_}"} for s in STUDENTS]
        upload(world, renamed)
        changed = partner.get(data(world), headers={"If-None-Match": etag})
        assert changed.status_code == 200, f"round {round_}: the replaced page was still current"
        assert names(changed) == {s["id"]: s["forename"] for s in renamed}, f"round {round_}"
        assert changed.headers["etag"] != etag
        assert changed.headers["x-data-as-of"] == rfc3339(world.now())
        etag = changed.headers["etag"]
        held = partner.get(data(world))  # and the new page is the one held from now on
        assert held.content == changed.content
        assert edge_of(world).page_bytes > 0


def test_an_upload_of_another_area_keeps_this_areas_page_held(
    world: World, partner: Partner, redis_client: redis.Redis
) -> None:
    first = make_held(world, partner)
    redis_client.delete(*redis_client.keys(HOT_PAGES))
    world.clock.advance(timedelta(minutes=1))
    upload(world, [{"id": "con-1", "forename": "Ada", "student_ids": ["stu-1"]}], area=CONTACTS)
    contacts = partner.get(data(world, CONTACTS))
    assert contacts.status_code == 200, contacts.text
    assert [r["forename"] for r in contacts.json()["data"]] == ["Ada"]
    [contacts_page] = redis_client.keys(HOT_PAGES)
    # Only contacts was invalidated: students.basic is still served from memory.
    again = partner.get(data(world))
    assert again.content == first.content
    assert redis_client.keys(HOT_PAGES) == [contacts_page]  # basic's page was not rebuilt


# (c) ------------------------------------------------------------------------------------


def consent_id(world: World) -> str:
    consents = world.call("GET", "/consents").json()
    found: str = consents["data"][0]["consent_id"]
    return found


def test_a_suspension_refuses_the_next_read_though_the_page_is_held(
    world: World, partner: Partner
) -> None:
    make_held(world, partner)
    response = world.call(
        "POST", f"/consents/{consent_id(world)}/suspend", json={"reason": "data protection query"}
    )
    assert response.status_code == 200, response.text
    refused = partner.get(data(world))
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/consent-required")
    assert "Amara" not in refused.text
    assert edge_of(world).page_bytes > 0  # the page is still held: the decision refused it
    assert [e["decision"] for e in access_log(world)][:1] == ["denied"]


def test_a_revocation_refuses_reads_from_its_end_though_the_page_is_held(
    world: World, partner: Partner
) -> None:
    make_held(world, partner)
    end_at = world.now() + timedelta(minutes=5)
    revoked = world.call(
        "POST", f"/consents/{consent_id(world)}/revoke", json={"end_at": rfc3339(end_at)}
    )
    assert revoked.status_code == 200, revoked.text
    announced = partner.get(data(world))
    assert announced.status_code == 200
    assert announced.headers["x-consent-ends-at"] == rfc3339(end_at)
    world.clock.set(end_at)
    refused = partner.get(data(world))
    assert refused.status_code == 403
    assert "Amara" not in refused.text
    assert edge_of(world).page_bytes > 0
    decisions = [e["decision"] for e in access_log(world)]
    assert decisions[0] == "denied"
    assert decisions.count("allowed") == 3


# (d) ------------------------------------------------------------------------------------


def rotate_with_cli(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """`misbroker partner rotate-secret --revoke-old`, as an operator runs it (another
    process in production; here in this one, with its own Redis connection)."""
    settings = world.resources.settings
    monkeypatch.setenv("MISBROKER_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("MISBROKER_ENVIRONMENT", "test")
    argv = ["--data-dir", str(settings.data_dir), "partner", "rotate-secret", world.partner_id]
    code: object = 0
    try:
        run([*argv, "--revoke-old", "--json"])
    except SystemExit as exc:
        code = exc.code
    assert not code, code


def revoke_directly(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async def revoke() -> None:
        client = aredis.Redis.from_url(world.resources.settings.redis_url)
        try:
            assert await revoke_partner_tokens(client, world.partner_id) >= 1
        finally:
            await client.aclose()

    asyncio.run(revoke())


@pytest.mark.parametrize("revoke", [rotate_with_cli, revoke_directly], ids=["cli", "function"])
def test_a_revoked_token_is_refused_once_the_revocation_is_heard(
    world: World, partner: Partner, monkeypatch: pytest.MonkeyPatch, revoke: Any
) -> None:
    """The revocation comes from another process: the contract is "within milliseconds"
    (the listener hears it), not "before the operator's command returns"."""
    make_held(world, partner)
    tokens: TokenCache = world.client.app.state.token_cache  # type: ignore[attr-defined]
    assert tokens.peek(partner.token) is not None
    before = len(access_log(world))
    revoke(world, monkeypatch)
    started = time.monotonic()
    while tokens.peek(partner.token) is not None:  # held 60 s unless the message drops it
        assert time.monotonic() - started < 1.0, "the revocation was not heard within 1 s"
        time.sleep(0.002)
    refused = partner.get(data(world))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "Amara" not in refused.text
    assert len(access_log(world)) == before  # unauthenticated: nothing read, nothing logged
    fresh = Partner(world)  # a new token (and secret) works at once
    assert fresh.get(data(world)).status_code == 200


# (e) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "", "-1", "1.5", "10 0"])
def test_a_bad_limit_is_invalid_input_and_changes_nothing(
    world: World, partner: Partner, limit: str
) -> None:
    make_held(world, partner)  # the fast path is warm: it must not take the bad query either
    before = access_log(world)
    for area in (BASIC, CONTACTS):  # cached and not: no extraction may be queued either
        response = partner.get(data(world, area), params={"limit": limit})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["type"].endswith("/invalid-input")
        assert problem["errors"][0]["location"] == "query.limit"
        assert "Amara" not in response.text
    assert access_log(world) == before
    beat = world.client.post(
        "/v1/agent/heartbeat", json={}, headers={"Authorization": f"Bearer {world.agent_key}"}
    ).json()
    assert beat["commands"] == []


@pytest.mark.parametrize(("limit", "count"), [("1", 1), ("1000", 3), (" 2 ", 2)])
def test_limits_in_range_are_read(world: World, partner: Partner, limit: str, count: int) -> None:
    response = partner.get(data(world), params={"limit": limit})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == count


def test_a_cursor_over_2000_characters_is_invalid_input(world: World, partner: Partner) -> None:
    make_held(world, partner)
    before = access_log(world)
    response = partner.get(data(world), params={"cursor": "c" * 2001})
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/invalid-input")
    assert problem["errors"][0]["location"] == "query.cursor"
    assert access_log(world) == before
    # 2000 is allowed through to the cursor's own check (a garbage cursor: 400).
    assert partner.get(data(world), params={"cursor": "c" * 2000}).status_code == 400


# (f) ------------------------------------------------------------------------------------


def test_openapi_documents_each_parameter_of_the_data_route_once(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][DATA_PATH]["get"]
    params = Counter((p["name"], p["in"]) for p in operation["parameters"])
    assert params == Counter(
        {
            ("school_id", "path"): 1,
            ("area", "path"): 1,
            ("fields", "query"): 1,
            ("updated_since", "query"): 1,
            ("limit", "query"): 1,
            ("cursor", "query"): 1,
        }
    )
    by_name = {p["name"]: p for p in operation["parameters"]}
    assert all(by_name[n]["required"] for n in ("school_id", "area"))
    assert not any(by_name[n]["required"] for n in ("fields", "updated_since", "limit", "cursor"))
    assert by_name["limit"]["schema"]["minimum"] == 1
    assert by_name["limit"]["schema"]["maximum"] == 1000
    assert by_name["cursor"]["schema"]["maxLength"] == 2000
    assert "requestBody" not in operation
    assert set(operation["responses"]) >= {"200", "401", "403", "404", "422"}
