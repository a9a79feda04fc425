"""Write-back at the broker: the partner's API, the agent's fetch and results, lifetimes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from broker.clock import FrozenClock
from broker.db import session_scope
from broker.events.models import OutboxEvent
from broker.partners.repository import PartnerRepository
from broker.partners.service import rotate_client_secret
from broker.writes.models import Write
from broker.writes.service import purge_finished
from consent.access_log import verify
from consent.models import AuditEvent
from tests.support.admin import World, cheap_argon2
from tests.support.partners import access_token
from tests.writes.support import (
    BASIC,
    BEHAVIOUR,
    MARKS,
    PUPILS,
    WritingPartner,
    agent_headers,
    behaviour_events,
    heartbeat,
    marks,
    writing_world,
)


@pytest.fixture
def setup(
    client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> tuple[World, WritingPartner]:
    cheap_argon2(monkeypatch)
    return writing_world(client, clock)


def write_events(world: World, kind: str) -> list[dict[str, Any]]:
    with Session(world.resources.engine) as session:
        rows = session.exec(select(OutboxEvent).where(OutboxEvent.type == kind)).all()
        return [{**r.payload, "partner_id": r.partner_id} for r in rows]


def apply_all(world: World, write_id: str, status: str = "applied") -> dict[str, Any]:
    fetched = world.client.get(f"/v1/agent/writes/{write_id}", headers=agent_headers(world))
    assert fetched.status_code == 200, fetched.text
    records = fetched.json()["records"]
    results = [
        {"index": i, "status": status, "mis_id": f"mis-{i}" if status == "applied" else None,
         "error": None if status == "applied" else "field 'mark': not a register code"}
        for i in range(len(records))
    ]  # fmt: skip
    reported = world.client.post(
        f"/v1/agent/writes/{write_id}/results",
        json={"results": results},
        headers=agent_headers(world),
    )
    assert reported.status_code == 200, reported.text
    body: dict[str, Any] = reported.json()
    return body


def test_a_write_is_queued_logged_delivered_applied_and_announced(
    setup: tuple[World, WritingPartner],
) -> None:
    world, partner = setup
    partner.grant()
    response = partner.write(MARKS, marks(30), key="marks-1")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted == {"write_id": accepted["write_id"], "status": "queued", "area": MARKS,
                        "count": 30}  # fmt: skip
    write_id = accepted["write_id"]
    assert response.headers["location"] == f"/v1/writes/{write_id}"

    log = world.call("GET", "/access-log").json()["data"]
    entry = next(e for e in log if e["partner_id"] == partner.partner_id)
    assert (entry["operation"], entry["record_count"]) == ("write", 30)
    assert entry["decision"] == "allowed"
    with Session(world.resources.engine) as session:
        key = world.runtime.keyring.key_for(world.school_id)
        report = verify(session, world.school_id, key)
    assert report.intact, report.breaks  # the write's entry is in the hash chain

    offered = heartbeat(world, [MARKS, BEHAVIOUR])["writes"]
    assert offered == [{"write_id": write_id, "area": MARKS, "count": 30}]
    body = apply_all(world, write_id)
    assert body["status"] == "applied"
    seen = partner.get(f"/writes/{write_id}").json()
    assert seen["status"] == "applied"
    assert [r["mis_id"] for r in seen["results"]] == [f"mis-{i}" for i in range(30)]
    assert heartbeat(world, [MARKS])["writes"] == []  # finished: not offered again
    (event,) = write_events(world, "write.applied")
    assert event["write_id"] == write_id
    assert event["partner_id"] == partner.partner_id
    assert len(event["results"]) == 30
    listed = partner.get("/writes", params={"status": "applied"}).json()["data"]
    assert [w["write_id"] for w in listed] == [write_id]


def test_the_same_key_gives_the_same_answer_and_another_body_409(
    setup: tuple[World, WritingPartner],
) -> None:
    world, partner = setup
    partner.grant()
    first = partner.write(BEHAVIOUR, behaviour_events(), key="same")
    again = partner.write(BEHAVIOUR, behaviour_events(), key="same")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    with Session(world.resources.engine) as session:
        assert len(session.exec(select(Write)).all()) == 1
    other = partner.write(BEHAVIOUR, behaviour_events("Another thing"), key="same")
    assert other.status_code == 409, other.text
    missing = partner.write(BEHAVIOUR, behaviour_events(), key=None)
    assert missing.status_code == 422
    assert "Idempotency-Key" in missing.json()["detail"]


def test_consent_is_required_to_write(setup: tuple[World, WritingPartner]) -> None:
    world, partner = setup
    refused = partner.write(MARKS, marks(2))
    assert refused.status_code == 403, refused.text
    assert refused.json()["missing_areas"] == [MARKS]
    partner.grant(mode="read")
    read_only = partner.write(MARKS, marks(2))
    assert read_only.status_code == 403, read_only.text
    assert read_only.json()["type"].endswith("consent-required")
    assert read_only.json()["missing_areas"] == [MARKS]
    log = world.call("GET", "/access-log", params={"decision": "denied"}).json()["data"]
    assert [e["operation"] for e in log] == ["write", "write"]


def test_first_tier_validation_names_the_record_and_field(
    setup: tuple[World, WritingPartner],
) -> None:
    _, partner = setup
    partner.grant()
    records = marks(3)
    records[2]["student_id"] = "stu-999999"
    bad_pupil = partner.write(MARKS, records)
    assert bad_pupil.status_code == 422, bad_pupil.text
    assert bad_pupil.json()["errors"] == [
        {"index": 2, "field": "student_id", "message": "no such pupil at this school"}
    ]
    records = marks(3)
    records[1]["session"] = "EVENING"
    bad_session = partner.write(MARKS, records, key="k2")
    assert bad_session.status_code == 422
    assert bad_session.json()["errors"][0]["index"] == 1
    assert bad_session.json()["errors"][0]["field"] == "session"
    records = marks(1)
    del records[0]["mark"]
    assert partner.write(MARKS, records, key="k3").json()["errors"][0]["field"] == "mark"
    assert partner.write(MARKS, marks(1001), key="k4").status_code == 422


def test_unknown_school_or_area_404_and_an_unwritable_area_422(
    setup: tuple[World, WritingPartner],
) -> None:
    _world, partner = setup
    partner.grant()
    assert partner.write("no.such.area", marks(1)).status_code == 404
    assert partner.write(MARKS, marks(1), school="sch_nope").status_code == 404
    unwritable = partner.write(BASIC, [{"forename": "X"}])
    assert unwritable.status_code == 422
    assert unwritable.json()["type"].endswith("not-writable")


def test_a_school_whose_agent_cannot_write_is_refused_at_queue_time(
    setup: tuple[World, WritingPartner],
) -> None:
    world, partner = setup
    partner.grant()
    heartbeat(world, write_areas=[])  # e.g. the OneRoster adapter
    refused = partner.write(MARKS, marks(1))
    assert refused.status_code == 422, refused.text
    assert "agent cannot apply" in refused.json()["detail"]


def test_only_the_writing_partner_sees_a_write(setup: tuple[World, WritingPartner]) -> None:
    world, partner = setup
    partner.grant()
    write_id = partner.write(MARKS, marks(1)).json()["write_id"]
    # Another partner's token finds nothing; an agent key is no partner token at all.
    stranger = world.client.get(
        f"/v1/writes/{write_id}", headers={"Authorization": f"Bearer {world.agent_key}"}
    )
    assert stranger.status_code == 401
    with session_scope(world.resources.engine) as session:
        rotated = rotate_client_secret(
            PartnerRepository(session), partner_id=world.other_partner_id, revoke_old=True,
            now=world.now(),
        )  # fmt: skip
    token = access_token(world.client, rotated.partner.client_id, rotated.client_secret)
    other = {"Authorization": f"Bearer {token}"}
    assert world.client.get(f"/v1/writes/{write_id}", headers=other).status_code == 404
    assert world.client.get("/v1/writes", headers=other).json()["data"] == []
    assert partner.get(f"/writes/{write_id}").status_code == 200


def test_an_undelivered_write_expires_after_24_hours(setup: tuple[World, WritingPartner]) -> None:
    world, partner = setup
    partner.grant()
    write_id = partner.write(MARKS, marks(2)).json()["write_id"]
    world.clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    assert partner.get(f"/writes/{write_id}").json()["status"] == "queued"
    world.clock.advance(timedelta(seconds=1))
    seen = partner.get(f"/writes/{write_id}").json()
    assert (seen["status"], seen["reason"]) == ("expired", "expired")
    (event,) = write_events(world, "write.failed")
    assert (event["write_id"], event["reason"]) == (write_id, "expired")
    gone = world.client.get(f"/v1/agent/writes/{write_id}", headers=agent_headers(world))
    assert gone.status_code == 409


def test_a_heartbeat_expires_due_writes_before_offering_the_rest(
    setup: tuple[World, WritingPartner],
) -> None:
    world, partner = setup
    partner.grant()
    old = partner.write(MARKS, marks(2)).json()["write_id"]
    world.clock.advance(timedelta(hours=12))
    fresh = partner.write(BEHAVIOUR, behaviour_events(), key="k2").json()["write_id"]
    assert [o["write_id"] for o in heartbeat(world, [MARKS, BEHAVIOUR])["writes"]] == [old, fresh]
    world.clock.advance(timedelta(hours=12))  # the first is 24 hours old, the second 12
    offered = heartbeat(world, [MARKS, BEHAVIOUR])["writes"]
    assert offered == [{"write_id": fresh, "area": BEHAVIOUR, "count": len(behaviour_events())}]
    (event,) = write_events(world, "write.failed")
    assert (event["write_id"], event["reason"]) == (old, "expired")
    assert partner.get(f"/writes/{old}").json()["status"] == "expired"
    assert heartbeat(world, [MARKS, BEHAVIOUR])["writes"] == offered  # expired once, not again
    assert len(write_events(world, "write.failed")) == 1


def test_revoking_or_suspending_cancels_queued_writes_not_delivered_ones(
    setup: tuple[World, WritingPartner],
) -> None:
    world, partner = setup
    consent_id = partner.grant()
    delivered = partner.write(MARKS, marks(2), key="a").json()["write_id"]
    queued = partner.write(BEHAVIOUR, behaviour_events(), key="b").json()["write_id"]
    fetched = world.client.get(f"/v1/agent/writes/{delivered}", headers=agent_headers(world))
    assert fetched.status_code == 200
    end = (world.now() + timedelta(days=7)).isoformat()
    revoked = world.call("POST", f"/consents/{consent_id}/revoke", json={"end_at": end})
    assert revoked.status_code == 200, revoked.text
    assert partner.get(f"/writes/{queued}").json()["status"] == "cancelled"
    assert partner.get(f"/writes/{delivered}").json()["status"] == "delivered"
    (event,) = write_events(world, "write.failed")
    assert (event["write_id"], event["reason"]) == (queued, "cancelled")


def test_the_school_lists_and_cancels_a_queued_write_audited(
    setup: tuple[World, WritingPartner],
) -> None:
    world, partner = setup
    partner.grant()
    write_id = partner.write(MARKS, marks(2)).json()["write_id"]
    listed = world.call("GET", "/writes").json()["data"]
    assert [(w["write_id"], w["partner_name"], w["status"]) for w in listed] == [
        (write_id, "Registerly", "queued")
    ]
    assert world.call("GET", "/writes", admin=world.other_admin).json()["data"] == []
    assert (
        world.call("POST", f"/writes/{write_id}/cancel", admin=world.other_admin).status_code == 404
    )
    cancelled = world.call("POST", f"/writes/{write_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert world.call("POST", f"/writes/{write_id}/cancel").status_code == 409
    assert partner.get(f"/writes/{write_id}").json()["reason"] == "cancelled"
    with Session(world.resources.engine) as session:
        actions = session.exec(select(AuditEvent.action)).all()
    assert "write.cancelled" in actions


def test_payloads_are_purged_30_days_after_finishing_metadata_stays(
    setup: tuple[World, WritingPartner],
) -> None:
    world, partner = setup
    partner.grant()
    write_id = partner.write(MARKS, marks(3)).json()["write_id"]
    apply_all(world, write_id, status="rejected")
    assert partner.get(f"/writes/{write_id}").json()["status"] == "failed"
    (event,) = write_events(world, "write.failed")
    assert event["reason"] == "rejected"
    with session_scope(world.resources.engine) as session:
        assert purge_finished(session, world.now() + timedelta(days=29), timedelta(days=30)) == 0
        assert purge_finished(session, world.now() + timedelta(days=30), timedelta(days=30)) == 1
    with Session(world.resources.engine) as session:
        row = session.get(Write, write_id)
        assert row is not None
        assert row.payload_sealed is None
        assert row.purged_at is not None
        assert row.results is not None
        assert len(row.results) == 3
    assert partner.get(f"/writes/{write_id}").json()["status"] == "failed"


def test_writes_are_rate_limited_like_reads(
    setup: tuple[World, WritingPartner], monkeypatch: pytest.MonkeyPatch
) -> None:
    world, partner = setup
    partner.grant()
    limiter = world.client.app.state.rate_limiter  # type: ignore[attr-defined]
    calls: list[str] = []
    real = limiter.hit

    def counting(partner_id: str, per_minute: int) -> None:
        calls.append(partner_id)
        real(partner_id, per_minute)

    monkeypatch.setattr(limiter, "hit", counting)
    partner.write(MARKS, marks(1))
    assert calls == [partner.partner_id]


def test_a_marker_in_a_written_record_is_nowhere_at_rest(
    setup: tuple[World, WritingPartner], redis_client: Any
) -> None:
    world, partner = setup
    partner.grant()
    canary = "CANARY-7f3e-writeback"
    write_id = partner.write(BEHAVIOUR, behaviour_events(canary)).json()["write_id"]
    fetched = world.client.get(f"/v1/agent/writes/{write_id}", headers=agent_headers(world))
    assert canary in fetched.text  # the agent gets it in clear over HTTPS, as it must
    data_dir = world.resources.settings.data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files
    needle = canary.encode()
    assert [p for p in files if needle in p.read_bytes()] == []
    for key in redis_client.scan_iter(count=1000):
        assert needle not in key
        kind = redis_client.type(key)
        if kind == b"string":
            assert needle not in (redis_client.get(key) or b"")
        elif kind == b"hash":
            assert all(needle not in v for v in redis_client.hvals(key))
    with Session(world.resources.engine) as session:
        assert session.exec(select(col(Write.id))).all() == [write_id]
    assert PUPILS


def test_a_pupil_outside_the_partners_view_is_written_about_as_one_that_does_not_exist(
    setup: tuple[World, WritingPartner],
) -> None:
    """Excluded from the audience, or restricted from every partner: the same 422 as an
    unknown pupil, so a refusal never tells the partner that the pupil is at the school."""
    world, partner = setup
    consent_id = partner.grant()
    audience = {"year_groups": None, "include_students": None, "exclude_students": [PUPILS[1]]}
    changed = world.call("PUT", f"/consents/{consent_id}/audience", json=audience)
    assert changed.status_code == 200, changed.text
    restricted = world.call(
        "POST", f"/students/{PUPILS[2]}/restriction", json={"reason": "Safeguarding"}
    )
    assert restricted.status_code in (200, 201), restricted.text
    for key, pupil in (("out", PUPILS[1]), ("restricted", PUPILS[2])):
        records = marks(1)
        records[0]["student_id"] = pupil
        refused = partner.write(MARKS, records, key=key)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"] == [
            {"index": 0, "field": "student_id", "message": "no such pupil at this school"}
        ]
    records = marks(1)
    records[0]["student_id"] = PUPILS[0]
    assert partner.write(MARKS, records, key="in").status_code == 202
    with Session(world.resources.engine) as session:
        assert len(session.exec(select(Write)).all()) == 1
