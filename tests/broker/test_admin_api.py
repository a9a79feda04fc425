"""The consent rules end to end through the school admin API (real HTTP/ASGI, SQLite, Redis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from broker.clock import FrozenClock, rfc3339
from broker.consent_wiring import finalize_ended
from broker.db import session_scope
from broker.events.models import OutboxEvent
from broker.schools.repository import SchoolRepository
from broker.schools.service import close_school
from consent.access_log import LogEntry
from consent.models import AuditEvent
from tests.support.admin import (
    BASIC,
    BEHAVIOUR,
    CONTACTS,
    DEMOGRAPHICS,
    World,
    build_world,
    cheap_argon2,
)

H = timedelta(hours=1)
US = timedelta(microseconds=1)
GRACE = 72 * H


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    return world


def outbox(world: World) -> list[tuple[str, dict[str, Any]]]:
    with Session(world.resources.engine) as session:
        rows = session.exec(select(OutboxEvent).order_by(col(OutboxEvent.created_at))).all()
    return [(row.type, row.payload) for row in rows]


def audit_rows(world: World) -> list[AuditEvent]:
    with Session(world.resources.engine) as session:
        return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.id))))


def test_grant_allows_at_once_and_is_announced(world: World) -> None:
    consent = world.grant()
    assert consent["status"] == "active"
    assert consent["areas"] == [CONTACTS, BASIC]
    assert consent["granted_at"] == rfc3339(world.now())
    decision = world.decision(BASIC)
    assert decision["allowed"] is True
    assert decision["reason"] == "granted"
    assert decision["consent_id"] == consent["consent_id"]
    assert world.decision(BASIC, at=world.now() - US)["reason"] == "not_yet_granted"
    assert [kind for kind, _ in outbox(world)] == ["consent.granted"]
    assert outbox(world)[0][1]["areas"] == [CONTACTS, BASIC]


def test_decisions_for_many_areas_at_once(world: World) -> None:
    world.grant()
    params = {"partner_id": world.partner_id, "area": [f"{BASIC},{CONTACTS}", BEHAVIOUR]}
    body = world.call("GET", "/decision", params=params).json()
    assert body["allowed"] is False
    assert body["missing_areas"] == [BEHAVIOUR]
    assert body["reason"] == "not_granted"
    assert {a["area"]: a["allowed"] for a in body["areas"]} == {
        BASIC: True,
        CONTACTS: True,
        BEHAVIOUR: False,
    }
    assert world.decision(BASIC, CONTACTS)["allowed"] is True


def test_unknown_area_in_a_decision_is_422(world: World) -> None:
    params = {"partner_id": world.partner_id, "area": "students.shoe_size"}
    response = world.call("GET", "/decision", params=params)
    assert response.status_code == 422
    assert response.json()["unknown_areas"] == ["students.shoe_size"]


def test_a_future_revocation_ends_access_exactly_at_end_at(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    end_at = world.now() + 2 * H
    response = world.call(
        "POST", f"/consents/{consent_id}/revoke", json={"end_at": rfc3339(end_at)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ending"
    assert response.json()["ends_at"] == rfc3339(end_at)
    before = world.decision(BASIC, at=end_at - US)
    assert before["allowed"] is True
    assert before["in_grace"] is False
    assert before["ends_at"] == rfc3339(end_at)
    after = world.decision(BASIC, at=end_at)
    assert after["allowed"] is False
    assert after["reason"] == "revoked"
    world.clock.set(end_at)
    assert world.call("GET", f"/consents/{consent_id}").json()["status"] == "revoked"


def test_a_retrospective_revocation_ends_after_the_grace_period(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    world.clock.advance(5 * H)
    revoked_at = world.now()
    body = {"end_at": rfc3339(revoked_at - 3 * H), "reason": "contract ended"}
    revoked = world.call("POST", f"/consents/{consent_id}/revoke", json=body).json()
    assert revoked["status"] == "ending"
    assert revoked["ends_at"] == rfc3339(revoked_at + GRACE)
    in_grace = world.decision(BASIC, at=revoked_at + GRACE - US)
    assert in_grace["allowed"] is True
    assert in_grace["in_grace"] is True
    assert world.decision(BASIC, at=revoked_at + GRACE)["allowed"] is False
    # As it stood before the revocation, access was plainly granted.
    assert world.decision(BASIC, at=revoked_at - US)["reason"] == "granted"
    world.clock.set(revoked_at + GRACE)
    assert world.call("GET", f"/consents/{consent_id}").json()["status"] == "revoked"
    revoked_event = outbox(world)[-1]
    assert revoked_event[0] == "consent.revoked"
    assert revoked_event[1]["ends_at"] == rfc3339(revoked_at + GRACE)


def test_an_end_can_be_brought_forward_but_never_pushed_back(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    path = f"/consents/{consent_id}/revoke"
    assert world.call("POST", path, json={"end_at": rfc3339(world.now() + 2 * H)}).is_success
    later = world.call("POST", path, json={"end_at": rfc3339(world.now() + 3 * H)})
    assert later.status_code == 422
    assert "never pushed back" in later.json()["detail"]
    sooner = world.call("POST", path, json={"end_at": rfc3339(world.now() + H)})
    assert sooner.json()["ends_at"] == rfc3339(world.now() + H)


def test_narrowing_revokes_the_removed_areas_with_grace(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    world.clock.advance(H)
    changed_at = world.now()
    response = world.call("PATCH", f"/consents/{consent_id}", json={"areas": [BASIC]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["areas"] == [BASIC]
    assert body["ending_areas"] == {CONTACTS: rfc3339(changed_at + GRACE)}
    assert world.decision(CONTACTS, at=changed_at + GRACE - US)["in_grace"] is True
    assert world.decision(CONTACTS, at=changed_at + GRACE)["reason"] == "ended"
    assert world.decision(BASIC, at=changed_at + GRACE)["allowed"] is True
    assert outbox(world)[-1][0] == "consent.updated"


def test_widening_to_an_area_the_partner_requested(world: World) -> None:
    consent_id = world.grant((BASIC,))["consent_id"]
    body = world.call("PATCH", f"/consents/{consent_id}", json={"areas": [BASIC, DEMOGRAPHICS]})
    assert body.json()["areas"] == [BASIC, DEMOGRAPHICS]
    assert world.decision(DEMOGRAPHICS)["allowed"] is True


def test_suspension_denies_at_once_and_resume_restores(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    missing = world.call("POST", f"/consents/{consent_id}/suspend", json={})
    assert missing.status_code == 422  # a suspension needs a reason
    suspended = world.call("POST", f"/consents/{consent_id}/suspend", json={"reason": "breach"})
    assert suspended.json()["status"] == "suspended"
    assert world.decision(BASIC)["reason"] == "suspended"
    again = world.call("POST", f"/consents/{consent_id}/suspend", json={"reason": "again"})
    assert again.status_code == 409
    world.clock.advance(H)
    resumed = world.call("POST", f"/consents/{consent_id}/resume")
    assert resumed.json()["status"] == "active"
    assert world.decision(BASIC)["allowed"] is True
    assert world.call("POST", f"/consents/{consent_id}/resume").status_code == 409
    kinds = [kind for kind, _ in outbox(world)]
    assert kinds == ["consent.granted", "consent.suspended", "consent.resumed"]


def test_a_thirty_day_suspension_ends_the_consent_once(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    world.call("POST", f"/consents/{consent_id}/suspend", json={"reason": "breach"})
    world.clock.advance(timedelta(days=30) - US)
    assert finalize_ended(world.resources, world.runtime.publisher) == []
    world.clock.advance(US)
    assert finalize_ended(world.resources, world.runtime.publisher) == [consent_id]
    assert finalize_ended(world.resources, world.runtime.publisher) == []
    consent = world.call("GET", f"/consents/{consent_id}").json()
    assert consent["status"] == "revoked"
    assert world.decision(BASIC)["reason"] == "suspension_expired"
    ended = [payload for kind, payload in outbox(world) if kind == "consent.ended"]
    assert len(ended) == 1
    assert ended[0]["reason"] == "suspension_expired"
    # The pair is free again: a new consent can be granted.
    assert world.grant()["consent_id"] != consent_id


def test_one_live_consent_per_partner(world: World) -> None:
    first = world.grant()["consent_id"]
    again = world.call("POST", "/consents", json={"partner_id": world.partner_id, "areas": [BASIC]})
    assert again.status_code == 409
    assert again.json()["consent_id"] == first
    world.call("POST", f"/consents/{first}/revoke", json={"end_at": rfc3339(world.now() + H)})
    assert (
        world.call(
            "POST", "/consents", json={"partner_id": world.partner_id, "areas": [BASIC]}
        ).status_code
        == 409
    )
    world.clock.advance(H)
    second = world.grant((BASIC,))["consent_id"]
    assert second != first
    assert world.decision(BASIC)["consent_id"] == second
    changes = world.call("POST", f"/consents/{first}/suspend", json={"reason": "x"})
    assert changes.status_code == 409  # nothing follows the end of a consent


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"areas": [BASIC, BEHAVIOUR]}, [BEHAVIOUR]),
        ({"areas": ["students.shoe_size"]}, ["students.shoe_size"]),
    ],
)
def test_areas_the_partner_did_not_request_are_422(
    world: World, body: dict[str, Any], expected: list[str]
) -> None:
    response = world.call("POST", "/consents", json={"partner_id": world.partner_id, **body})
    assert response.status_code == 422
    assert response.json()["extra_areas"] == expected
    assert world.call("GET", "/consents").json() == {"data": []}


def test_an_unknown_partner_or_empty_areas_is_422(world: World) -> None:
    unknown = world.call("POST", "/consents", json={"partner_id": "prt_x", "areas": [BASIC]})
    assert unknown.status_code == 422
    empty = world.call("POST", "/consents", json={"partner_id": world.partner_id, "areas": []})
    assert empty.status_code == 422


def test_another_schools_consent_is_not_found(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    other = world.other_admin
    for method, path, body in [
        ("GET", f"/consents/{consent_id}", None),
        ("GET", f"/consents/{consent_id}/receipt", None),
        ("POST", f"/consents/{consent_id}/suspend", {"reason": "mine now"}),
        ("POST", f"/consents/{consent_id}/revoke", {"end_at": rfc3339(world.now())}),
    ]:
        response = world.call(method, path, admin=other, json=body)
        assert response.status_code == 404, (method, path)
    assert world.call("GET", "/consents", admin=other).json() == {"data": []}
    # The other school's view of the partner shows no consent, and its decision is no.
    assert world.decision(BASIC)["allowed"] is True
    params = {"partner_id": world.partner_id, "area": BASIC}
    assert world.call("GET", "/decision", admin=other, params=params).json()["allowed"] is False
    assert world.call("GET", f"/consents/{consent_id}").json()["status"] == "active"


def test_a_closed_school_cannot_grant(world: World) -> None:
    with session_scope(world.resources.engine) as session:
        close_school(SchoolRepository(session), school_id=world.school_id, now=world.now())
    response = world.call(
        "POST", "/consents", json={"partner_id": world.partner_id, "areas": [BASIC]}
    )
    assert response.status_code == 409
    assert "closed" in response.json()["detail"]


def test_partners_list_requests_reasons_and_my_consent(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    partners = {p["name"]: p for p in world.call("GET", "/partners").json()["data"]}
    exampro = partners["ExamPro"]
    assert exampro["consent"]["consent_id"] == consent_id
    areas = [{k: v for k, v in a.items() if k != "fields"} for a in exampro["requested_areas"]]
    assert {"area": DEMOGRAPHICS, "reason": "Pupil premium reporting", "sensitive": True} in areas
    # Requested with --areas: every field required, and a default grant approves them all.
    demographics = next(a for a in exampro["requested_areas"] if a["area"] == DEMOGRAPHICS)
    assert all(f["required"] and not f["pending"] for f in demographics["fields"])
    assert partners["Textly"]["consent"] is None


def test_the_receipt_records_the_agreement_and_its_history(world: World) -> None:
    consent_id = world.grant((BASIC, DEMOGRAPHICS))["consent_id"]
    granted = world.call("GET", f"/consents/{consent_id}/receipt").json()
    assert granted["school"] == {
        "id": world.school_id,
        "name": "Hilltop Academy",
        "dfe_number": "3024012",
    }
    assert granted["partner"] == {"id": world.partner_id, "name": "ExamPro"}
    assert granted["areas"] == [
        {"area": BASIC, "reason": None, "ends_at": None},
        {"area": DEMOGRAPHICS, "reason": "Pupil premium reporting", "ends_at": None},
    ]
    assert [e["type"] for e in granted["events"]] == ["granted"]
    assert granted["events"][0]["actor"].startswith("admin:adm_")
    world.clock.advance(H)
    end_at = world.now() + H
    world.call("POST", f"/consents/{consent_id}/revoke", json={"end_at": rfc3339(end_at)})
    revoked = world.call("GET", f"/consents/{consent_id}/receipt").json()
    assert revoked["receipt_id"] != granted["receipt_id"]
    assert revoked["status"] == "ending"
    assert revoked["ends_at"] == rfc3339(end_at)
    assert [e["type"] for e in revoked["events"]] == ["granted", "revoked"]
    assert revoked["events"][1]["end_at"] == rfc3339(end_at)


def test_reads_after_the_chosen_end_date_are_listed(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    writer = world.runtime.access_log

    def read(area: str, partner: str | None = None, rid: str = "r") -> None:
        entry = LogEntry(
            school_id=world.school_id,
            partner_id=partner or world.partner_id,
            areas=(area,),
            record_count=10,
            decision="allowed",
            reason="granted",
            request_id=rid,
            at=world.now(),
            consent_id=consent_id,
        )
        world.client.portal.call(writer.append, entry)  # type: ignore[union-attr]

    read(BASIC, rid="before-end")
    world.clock.advance(H)
    end_at = world.now()
    read(BASIC, rid="at-end")
    world.clock.advance(H)
    read(CONTACTS, rid="after-end")
    read(BEHAVIOUR, rid="other-area")
    read(BASIC, partner=world.other_partner_id, rid="other-partner")
    world.clock.advance(H)
    revoked_at = world.now()
    world.call("POST", f"/consents/{consent_id}/revoke", json={"end_at": rfc3339(end_at)})
    world.clock.advance(H)
    read(BASIC, rid="in-grace")
    body = world.call("GET", f"/consents/{consent_id}/reads-after-end").json()
    assert body["windows"] == [
        {"end_at": rfc3339(end_at), "revoked_at": rfc3339(revoked_at), "areas": [CONTACTS, BASIC]}
    ]
    assert [r["request_id"] for r in body["data"]] == ["at-end", "after-end"]


def test_no_reads_after_end_for_a_future_revocation(world: World) -> None:
    consent_id = world.grant()["consent_id"]
    world.call("POST", f"/consents/{consent_id}/revoke", json={"end_at": rfc3339(world.now() + H)})
    body = world.call("GET", f"/consents/{consent_id}/reads-after-end").json()
    assert body["windows"] == []
    assert body["data"] == []


@pytest.mark.parametrize(
    ("credential", "status", "actor"),
    [
        (None, 401, "anonymous"),
        ("mbt_not-a-live-partner-token", 403, "partner-token:unknown"),
        ("agent", 403, "agent:"),
        ("mba_forged-admin-token", 401, "admin-token:unknown"),
    ],
)
def test_non_admins_are_refused_and_the_attempt_is_recorded(
    world: World, credential: str | None, status: int, actor: str
) -> None:
    token = world.agent_key if credential == "agent" else credential
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body = {"partner_id": world.partner_id, "areas": [BASIC]}
    response = world.client.post("/v1/admin/consents", json=body, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    (row,) = audit_rows(world)
    assert row.actor.startswith(actor)
    assert row.action == "admin_api.refused"
    assert row.target == "POST /v1/admin/consents"
    assert row.detail["endpoint"] == "grant_consent"
    assert token is None or token not in str(row.detail)
    assert world.call("GET", "/consents").json() == {"data": []}


def test_a_live_partner_token_is_refused_and_named(world: World) -> None:
    from broker.partners.tokens import PartnerPrincipal, issue_token

    redis_client = world.client.app.state.redis  # type: ignore[attr-defined]
    principal = PartnerPrincipal(partner_id=world.partner_id, client_id="cli_x")
    issued = world.client.portal.call(issue_token, redis_client, principal, world.now())  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {issued.access_token}"}
    body = {"partner_id": world.partner_id, "areas": [BASIC]}
    response = world.client.post("/v1/admin/consents", json=body, headers=headers)
    assert response.status_code == 403
    assert "only a school admin" in response.json()["detail"]
    assert audit_rows(world)[0].actor == f"partner:{world.partner_id}"


def test_the_openapi_document_declares_the_admin_problems(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    grant = spec["paths"]["/v1/admin/consents"]["post"]
    assert {"201", "401", "403", "404", "409", "422"} <= set(grant["responses"])
    assert "429" in spec["paths"]["/v1/admin/login"]["post"]["responses"]
    assert "text/csv" in spec["paths"]["/v1/admin/access-log"]["get"]["responses"]["200"]["content"]


def test_the_celery_task_records_ended_consents(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker import worker
    from broker.consent_tasks import finalize_ended_task

    monkeypatch.setattr(worker, "_resources", world.resources)  # the worker's clients
    consent_id = world.grant()["consent_id"]
    world.call("POST", f"/consents/{consent_id}/revoke", json={"end_at": rfc3339(world.now() + H)})
    assert finalize_ended_task.run() == 0
    world.clock.advance(H)
    assert finalize_ended_task.run() == 1
    assert finalize_ended_task.run() == 0
    assert [kind for kind, _ in outbox(world)][-1] == "consent.ended"
