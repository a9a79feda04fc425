"""The partner read API end to end: consent decides, the access log records, the cache serves."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import rotate_client_secret
from tests.support.admin import BASIC, CONTACTS, World, build_world, cheap_argon2

H = timedelta(hours=1)
STUDENTS = [
    {
        "id": "stu-1",
        "upn": "A123456789012",
        "forename": "Amara",
        "surname": "Okafor",
        "on_roll": True,
    },
    {
        "id": "stu-2",
        "upn": "B123456789012",
        "forename": "Ben",
        "surname": "Hughes",
        "on_roll": True,
    },
    {
        "id": "stu-3",
        "upn": "C123456789012",
        "forename": "Chloe",
        "surname": "Patel",
        "on_roll": True,
    },
]


class Partner:
    def __init__(self, world: World) -> None:
        self.world = world
        with session_scope(world.resources.engine) as session:
            rotated = rotate_client_secret(
                PartnerRepository(session),
                partner_id=world.partner_id,
                revoke_old=True,
                now=world.now(),
            )
        response = world.client.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": rotated.partner.client_id,
                "client_secret": rotated.client_secret,
            },
        )
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]

    def get(self, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.world.client.get(f"/v1{path}", headers=headers, **kw)


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    return world


def upload(
    world: World,
    records: list[dict[str, Any]],
    *,
    mode: str = "full",
    deleted: list[str] | None = None,
    area: str = BASIC,
) -> None:
    body = {
        "batch_id": str(uuid.uuid4()),
        "area": area,
        "mode": mode,
        "extracted_at": rfc3339(world.now()),
        "records": records,
        "deleted": deleted or [],
    }
    response = world.client.post(
        "/v1/agent/uploads", json=body, headers={"Authorization": f"Bearer {world.agent_key}"}
    )
    assert response.status_code == 200, response.text


def access_log(world: World) -> list[dict[str, Any]]:
    response = world.call("GET", "/access-log")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


@pytest.fixture
def partner(world: World) -> Partner:
    world.grant((BASIC, CONTACTS))
    upload(world, STUDENTS)
    return Partner(world)


def test_a_consented_read_returns_records_and_is_logged_first(
    world: World, partner: Partner
) -> None:
    response = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}", headers={"X-Request-Id": "req-read-0001"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    by_id = {r["id"]: r for r in body["data"]}
    assert sorted(by_id) == ["stu-1", "stu-2", "stu-3"]
    assert by_id["stu-1"]["forename"] == "Amara"
    assert body["meta"]["stale"] is False
    assert response.headers["x-data-as-of"] == body["meta"]["as_of"]
    assert response.headers["x-data-stale"] == "false"
    assert response.headers["etag"]
    assert "x-consent-ends-at" not in response.headers
    [entry] = access_log(world)
    assert entry["partner_id"] == world.partner_id
    assert entry["areas"] == [BASIC]
    assert entry["record_count"] == 3
    assert entry["decision"] == "allowed"
    assert entry["request_id"] == "req-read-0001"


def test_projection_keeps_id_and_only_the_fields_asked(world: World, partner: Partner) -> None:
    body = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}", params={"fields": "forename"}
    ).json()
    assert {"id": "stu-1", "forename": "Amara"} in body["data"]
    assert all(set(r) == {"id", "forename"} for r in body["data"])
    bad = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}", params={"fields": "forename,shoe_size"}
    )
    assert bad.status_code == 400
    assert bad.json()["unknown_fields"] == ["shoe_size"]


def test_pages_follow_the_cursor(world: World, partner: Partner) -> None:
    first = partner.get(f"/schools/{world.school_id}/data/{BASIC}", params={"limit": 2}).json()
    assert len(first["data"]) == 2
    second = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}",
        params={"limit": 2, "cursor": first["meta"]["next_cursor"]},
    ).json()
    assert sorted(r["id"] for r in first["data"] + second["data"]) == ["stu-1", "stu-2", "stu-3"]
    assert second["meta"]["next_cursor"] is None
    bad = partner.get(f"/schools/{world.school_id}/data/{BASIC}", params={"cursor": "garbage"})
    assert bad.status_code == 400


def test_an_area_without_consent_is_403_and_logged_as_denied(
    world: World, partner: Partner
) -> None:
    response = partner.get(f"/schools/{world.school_id}/data/students.demographics")
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"].endswith("/consent-required")
    assert problem["missing_areas"] == ["students.demographics"]
    assert response.text.count("Amara") == 0
    assert [e["decision"] for e in access_log(world)] == ["denied"]


def test_another_school_is_403_and_an_unknown_one_404(world: World, partner: Partner) -> None:
    other = partner.get(f"/schools/{world.other_admin.school_id}/data/{BASIC}")
    assert other.status_code == 403
    assert partner.get(f"/schools/sch_nope/data/{BASIC}").status_code == 404
    assert partner.get(f"/schools/{world.school_id}/data/students.shoe_size").status_code == 404


def test_no_token_is_401(world: World) -> None:
    response = world.client.get(f"/v1/schools/{world.school_id}/data/{BASIC}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_not_cached_yet_is_202_and_queues_an_extraction(world: World, partner: Partner) -> None:
    response = partner.get(f"/schools/{world.school_id}/data/{CONTACTS}")
    assert response.status_code == 202
    assert response.json() == {"state": "fetching"}
    assert int(response.headers["retry-after"]) > 0
    beat = world.client.post(
        "/v1/agent/heartbeat", json={}, headers={"Authorization": f"Bearer {world.agent_key}"}
    ).json()
    assert [(c["kind"], c["args"]["areas"]) for c in beat["commands"]] == [("extract", [CONTACTS])]


def test_if_none_match_gives_304(world: World, partner: Partner) -> None:
    first = partner.get(f"/schools/{world.school_id}/data/{BASIC}")
    again = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    world.clock.advance(H)
    upload(world, [*STUDENTS, {"id": "stu-4", "forename": "Dev"}])
    changed = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}", headers={"If-None-Match": first.headers["etag"]}
    )
    assert changed.status_code == 200
    assert len(changed.json()["data"]) == 4


def test_updated_since_returns_changes_and_deletions(world: World, partner: Partner) -> None:
    since = world.now()
    world.clock.advance(H)
    upload(world, [{"id": "stu-1", "forename": "Amarachi"}], mode="delta", deleted=["stu-3"])
    body = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}", params={"updated_since": rfc3339(since)}
    ).json()
    by_id = {r["id"]: r for r in body["data"]}
    assert set(by_id) == {"stu-1", "stu-3"}
    assert by_id["stu-1"]["forename"] == "Amarachi"
    assert by_id["stu-3"] == {"id": "stu-3", "deleted": True}
    bad = partner.get(
        f"/schools/{world.school_id}/data/{BASIC}", params={"updated_since": "yesterday"}
    )
    assert bad.status_code == 400


def test_a_pending_revocation_is_announced_then_enforced(world: World, partner: Partner) -> None:
    consents = world.call("GET", "/consents").json()
    consent_id = (
        consents["data"][0]["consent_id"] if "data" in consents else consents[0]["consent_id"]
    )
    end_at = world.now() + 2 * H
    assert (
        world.call(
            "POST", f"/consents/{consent_id}/revoke", json={"end_at": rfc3339(end_at)}
        ).status_code
        == 200
    )
    response = partner.get(f"/schools/{world.school_id}/data/{BASIC}")
    assert response.status_code == 200
    assert response.headers["x-consent-ends-at"] == rfc3339(end_at)
    world.clock.set(end_at)
    assert partner.get(f"/schools/{world.school_id}/data/{BASIC}").status_code == 403


def test_my_schools_and_my_consent(world: World, partner: Partner) -> None:
    schools = partner.get("/schools").json()["data"]
    assert [s["school_id"] for s in schools] == [world.school_id]
    assert schools[0]["consent"]["status"] == "active"
    consent = partner.get(f"/schools/{world.school_id}/consent").json()
    assert set(consent["areas"]) == {BASIC, CONTACTS}
    assert partner.get(f"/schools/{world.other_admin.school_id}/consent").status_code == 404
    receipt = partner.get(f"/schools/{world.school_id}/consent/receipt")
    assert receipt.status_code == 200
    assert receipt.json()["consent_id"] == consent["consent_id"]


def test_no_access_log_no_data(world: World, partner: Partner) -> None:
    with world.resources.engine.begin() as conn:
        conn.execute(text("DROP TABLE access_log"))
    response = partner.get(f"/schools/{world.school_id}/data/{BASIC}")
    assert response.status_code >= 500
    assert "Amara" not in response.text


def test_rate_limit_answers_429_with_retry_after(world: World, partner: Partner) -> None:
    with session_scope(world.resources.engine) as session:
        p = PartnerRepository(session).get(world.partner_id)
        assert p is not None
        p.rate_limit_per_minute = 3
        session.add(p)
    limited = Partner(world)  # the limit travels in the token
    codes = [limited.get(f"/schools/{world.school_id}/data/{BASIC}").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    last = limited.get(f"/schools/{world.school_id}/data/{BASIC}")
    assert int(last.headers["retry-after"]) >= 1


def test_the_partners_receipt_names_no_admin(world: World, partner: Partner) -> None:
    receipt = partner.get(f"/schools/{world.school_id}/consent/receipt").json()
    actors = {event["actor"] for event in receipt["events"]}
    assert actors == {"school admin"}
    assert "adm_" not in str(receipt)
