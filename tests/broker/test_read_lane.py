"""The partner read fast lane answers exactly as the route does, and only when it can."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.middleware import HTTP_REQUESTS
from broker.partners.reads import PartnerReads
from broker.partners.repository import PartnerRepository
from tests.broker.test_partner_api import STUDENTS, Partner, access_log, upload
from tests.support.admin import BASIC, CONTACTS, World, build_world, cheap_argon2

# Headers that differ between any two responses by design.
PER_RESPONSE = {"x-request-id", "date"}


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    world.grant((BASIC, CONTACTS))
    upload(world, STUDENTS)
    return world


class RouteCalls:
    """Counts the reads that reached the FastAPI route (the lane never calls fetch_hot)."""

    def __init__(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        reads: PartnerReads = world.client.app.state.partner_reads  # type: ignore[attr-defined]
        original = reads.fetch_hot

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(*args, **kwargs)

        monkeypatch.setattr(reads, "fetch_hot", counted)


@pytest.fixture
def route(world: World, monkeypatch: pytest.MonkeyPatch) -> RouteCalls:
    return RouteCalls(world, monkeypatch)


def hold(partner: Partner, path: str, route: RouteCalls) -> Any:
    """Read until the page is held in this process; the last read is the route's.

    The first read builds the page (warm tier, into Redis); the next fetches it from Redis
    into the process; only then can the lane serve it.
    """
    for _ in range(2):
        response = partner.get(path)
        assert response.status_code == 200, response.text
    assert route.count == 2
    return response


def headers_of(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in PER_RESPONSE}


def test_the_lane_answers_a_held_page_exactly_as_the_route_did(
    world: World, route: RouteCalls
) -> None:
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}?limit=2"
    first = hold(partner, path, route)
    second = partner.get(path)
    assert (second.status_code, route.count) == (200, 2), "the lane should have served it"
    assert second.content == first.content
    assert headers_of(second) == headers_of(first)
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert [e["record_count"] for e in access_log(world)] == [2, 2, 2]


def test_the_lane_answers_if_none_match_with_304_and_logs_no_records(
    world: World, route: RouteCalls
) -> None:
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    etag = hold(partner, path, route).headers["etag"]
    by_lane = partner.get(path, headers={"If-None-Match": "W/" + etag})
    assert route.count == 2, "the lane should have answered"
    assert by_lane.status_code == 304
    assert by_lane.content == b""
    assert by_lane.headers["etag"] == etag
    assert [e["record_count"] for e in access_log(world)] == [0, 3, 3]


def test_the_lane_enforces_the_rate_limit_with_the_routes_problem(
    world: World, route: RouteCalls
) -> None:
    with session_scope(world.resources.engine) as session:
        stored = PartnerRepository(session).get(world.partner_id)
        assert stored is not None
        stored.rate_limit_per_minute = 3
        session.add(stored)
    partner = Partner(world)  # the limit travels in the token
    path = f"/schools/{world.school_id}/data/{BASIC}"
    hold(partner, path, route)
    assert partner.get(path).status_code == 200
    refused = partner.get(path)
    assert route.count == 2, "the refusal should have been the lane's"
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["limit_per_minute"] == 3
    assert "Amara" not in refused.text
    # Stamped as the middleware the lane runs in front of would have stamped it.
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.headers["cache-control"] == "no-store"
    assert len(refused.headers["x-request-id"]) == 32
    assert len(access_log(world)) == 3


def test_without_an_access_log_the_lane_sends_no_data(world: World, route: RouteCalls) -> None:
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    hold(partner, path, route)
    with world.resources.engine.begin() as conn:
        conn.execute(text("DROP TABLE access_log"))
    response = partner.get(path)
    assert route.count == 2, "the failed read should have been the lane's"
    assert response.status_code >= 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "Amara" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "x-request-id" in response.headers


def test_the_lane_keeps_a_sane_request_id_and_counts_the_request(
    world: World, route: RouteCalls
) -> None:
    def served() -> float:
        labels = {"method": "GET", "route": "/v1/schools/{school_id}/data/{area}"}
        value = HTTP_REQUESTS.labels(**labels, status="200")._value.get()
        return float(value)

    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    hold(partner, path, route)
    before = served()
    by_lane = partner.get(path, headers={"X-Request-Id": "client-chosen-id-0001"})
    assert route.count == 2, "the lane should have answered"
    assert by_lane.headers["x-request-id"] == "client-chosen-id-0001"
    assert access_log(world)[0]["request_id"] == "client-chosen-id-0001"
    assert served() == before + 1
    insane = partner.get(path, headers={"X-Request-Id": "<script>"})
    assert insane.headers["x-request-id"] != "<script>"


def test_a_get_with_a_body_is_the_edges_to_judge(world: World, route: RouteCalls) -> None:
    """The lane takes no request with a body: the edge middleware's limits apply to it."""
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    hold(partner, path, route)
    response = world.client.request(
        "GET",
        f"/v1{path}",
        headers={"Authorization": f"Bearer {partner.token}"},
        content=b"x" * (2 * 1024 * 1024),
    )
    assert response.status_code == 413
    assert route.count == 2


@pytest.mark.parametrize(
    "tail",
    [
        "?limit=0",  # invalid: the route's 422
        "?fields=nope",  # unknown field: the route's 400
        "?limit=1",  # a page not held yet: the route fetches it
    ],
)
def test_what_the_lane_cannot_answer_goes_to_the_route(
    world: World, route: RouteCalls, tail: str
) -> None:
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    hold(partner, path, route)
    before = route.count
    response = partner.get(path + tail)
    assert response.status_code in (200, 400, 422)
    if response.status_code == 200:
        assert route.count == before + 1
    else:
        assert response.headers["content-type"] == "application/problem+json"


def test_a_consent_ending_is_announced_by_the_lane_then_refused_by_the_route(
    world: World, route: RouteCalls
) -> None:
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    hold(partner, path, route)
    [consent] = world.call("GET", "/consents").json()["data"]
    end_at = world.now() + timedelta(hours=2)
    revoked = world.call(
        "POST", f"/consents/{consent['consent_id']}/revoke", json={"end_at": rfc3339(end_at)}
    )
    assert revoked.status_code == 200, revoked.text
    partner.get(path)  # the revocation dropped the decision: the route loads it again
    announced = partner.get(path)
    assert route.count == 3, "the read after the reload should have been the lane's"
    assert announced.headers["x-consent-ends-at"] == rfc3339(end_at)
    world.clock.set(end_at)
    refused = partner.get(path)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("consent-required")

    assert [e["decision"] for e in access_log(world)][:2] == ["denied", "allowed"]


def test_an_upload_here_is_never_served_old_here_even_before_its_message_arrives(
    world: World, route: RouteCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = Partner(world)
    path = f"/schools/{world.school_id}/data/{BASIC}"
    hold(partner, path, route)
    edge = world.client.app.state.partner_reads.hot_reader.edge  # type: ignore[attr-defined]
    monkeypatch.setattr(edge, "apply", lambda message: None)  # the message is late
    renamed = [{**STUDENTS[0], "forename": "Adaeze"}, *STUDENTS[1:]]
    upload(world, renamed)
    body = partner.get(path).json()
    assert {r["id"]: r["forename"] for r in body["data"]}["stu-1"] == "Adaeze"
