"""The partner API for webhook deliveries, over HTTP with a partner's bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from broker.clock import FrozenClock, rfc3339
from broker.resources import Resources
from broker.webhooks.transport import webhook_client
from tests.broker.test_webhooks import (
    LOCAL,
    POLICY,
    Receiver,
    add_partner,
    deliveries,
    emit_consent,
    hooked,
    library_time_from,
    run_deliver,
    run_fan_out,
)
from tests.support.live import live_server
from tests.support.partners import access_token

LIST = "/v1/webhooks/deliveries"


@pytest.fixture
def resources(client: TestClient) -> Resources:
    res: Resources = client.app.state.resources  # type: ignore[attr-defined]
    return res


@pytest.fixture
def receiver(clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    library_time_from(clock, monkeypatch)
    found = Receiver()
    with live_server(found.app()) as url:
        found.url = url
        yield found


def bearer(client: TestClient, client_id: str, client_secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token(client, client_id, client_secret)}"}


def login(client: TestClient, created: Any) -> dict[str, str]:
    return bearer(client, created.partner.client_id, created.client_secret)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_listing_needs_a_partner_token(client: TestClient) -> None:
    problem(client.get(LIST), 401)
    problem(client.get(LIST, headers={"Authorization": "Bearer mbt_unknown"}), 401)


def test_a_partner_lists_only_its_deliveries_page_by_page(
    client: TestClient,
    resources: Resources,
    clock: FrozenClock,
    receiver: Receiver,
) -> None:
    mine = hooked(resources, clock, receiver, script=[410, 204])
    theirs = hooked(resources, clock, receiver, "Theirs")
    for _ in range(3):
        emit_consent(resources, clock, mine.partner.id)
        emit_consent(resources, clock, theirs.partner.id)
        clock.advance(timedelta(seconds=1))
    run_fan_out(resources, clock)
    with webhook_client(LOCAL) as http:
        statuses = run_deliver(resources, clock, http)
    assert sorted(statuses) == ["delivered"] * 5 + ["failed"]
    auth = login(client, mine)

    first = client.get(LIST, params={"limit": 2}, headers=auth)
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["data"]) == 2
    second = client.get(
        LIST, params={"limit": 2, "cursor": body["meta"]["next_cursor"]}, headers=auth
    ).json()
    assert second["meta"]["next_cursor"] is None
    listed = body["data"] + second["data"]
    ours = sorted(
        (d for d in deliveries(resources) if d.partner_id == mine.partner.id),
        key=lambda d: (d.created_at, d.id),
        reverse=True,
    )
    assert [d["id"] for d in listed] == [d.id for d in ours]
    failed = next(d for d in ours if d.status == "failed")
    assert next(d for d in listed if d["id"] == failed.id) == {
        "id": failed.id,
        "event_type": "consent.granted",
        "status": "failed",
        "attempts": 1,
        "created_at": rfc3339(failed.created_at),
        "last_attempt_at": rfc3339(clock.now()),
        "last_status_code": 410,
        "last_error": "HTTP 410",
        "next_attempt_at": None,
        "delivered_at": None,
    }
    only_failed = client.get(LIST, params={"status": "failed"}, headers=auth).json()
    assert [d["id"] for d in only_failed["data"]] == [failed.id]


@pytest.mark.parametrize(
    "params",
    [{"status": "lost"}, {"limit": 0}, {"limit": 201}, {"cursor": "bm90LWEtY3Vyc29y"}],
)
def test_bad_list_parameters_are_422_problems(
    client: TestClient, resources: Resources, clock: FrozenClock, params: dict[str, Any]
) -> None:
    created = add_partner(resources, clock, "ExamPro", "https://exampro.example/hook", None)
    problem(client.get(LIST, params=params, headers=login(client, created)), 422)


def test_redelivery_over_http(
    client: TestClient, resources: Resources, clock: FrozenClock, receiver: Receiver
) -> None:
    mine = hooked(resources, clock, receiver, script=[410, 204])
    stranger = add_partner(resources, clock, "Stranger", "https://stranger.example/", None)
    emit_consent(resources, clock, mine.partner.id)
    run_fan_out(resources, clock)
    with webhook_client(LOCAL) as http:
        assert run_deliver(resources, clock, http, POLICY) == ["failed"]
    [delivery] = deliveries(resources)
    path = f"{LIST}/{delivery.id}/redeliver"

    problem(client.post(path), 401)
    not_yours = problem(client.post(path, headers=login(client, stranger)), 404)
    assert delivery.id in not_yours["detail"]
    problem(client.post(f"{LIST}/msg_nope/redeliver", headers=login(client, mine)), 404)

    clock.advance(timedelta(hours=30))
    response = client.post(path, headers=login(client, mine))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["id"], body["status"], body["attempts"]) == (delivery.id, "pending", 0)
    assert body["next_attempt_at"] == rfc3339(clock.now())

    with webhook_client(LOCAL) as http:
        assert run_deliver(resources, clock, http, POLICY) == ["delivered"]
    assert [r.headers["webhook-id"] for r in receiver.for_key("ExamPro")] == [delivery.id] * 2
    assert all(r.error is None for r in receiver.for_key("ExamPro"))
    listed = client.get(LIST, headers=login(client, mine)).json()["data"]
    assert (listed[0]["status"], listed[0]["delivered_at"]) == ("delivered", rfc3339(clock.now()))


def test_the_openapi_document_declares_every_answer(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    listing = paths[LIST]["get"]["responses"]
    again = paths[f"{LIST}/{{delivery_id}}/redeliver"]["post"]["responses"]
    assert {"200", "401", "422"} <= set(listing)
    assert {"202", "401", "404", "409", "422"} <= set(again)
