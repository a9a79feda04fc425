"""The agent API's auth, validation, heartbeat and commands over real HTTP (ASGI)."""

from __future__ import annotations

import gzip
import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from broker.agenthub import commands
from broker.agenthub.models import CommandKind
from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.events.models import OutboxEvent
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import close_school, register_school


@pytest.fixture
def resources(client: TestClient) -> Resources:
    res: Resources = client.app.state.resources  # type: ignore[attr-defined]
    return res


@pytest.fixture
def school(resources: Resources, clock: FrozenClock) -> dict[str, str]:
    from broker.db import upgrade

    upgrade(resources.engine)
    with session_scope(resources.engine) as session:
        created = register_school(
            SchoolRepository(session),
            name="Hilltop",
            dfe_number="3024012",
            urn=None,
            now=clock.now(),
        )
    return {"school_id": created.school.id, "agent_key": created.agent_key}


def auth(school: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {school['agent_key']}"}


def upload_body(clock: FrozenClock, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "batch_id": str(uuid.uuid4()),
        "area": "students.basic",
        "mode": "delta",
        "extracted_at": rfc3339(clock.now() - timedelta(minutes=5)),
        "records": [{"id": "stu-1", "forename": "Amara", "surname": "Okafor"}],
        "deleted": [],
    }
    body.update(overrides)
    return body


def test_agent_endpoints_need_a_valid_key(client: TestClient, school: dict[str, str]) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = client.post("/v1/agent/heartbeat", json={}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"


def test_a_closed_school_cannot_upload(
    client: TestClient, school: dict[str, str], resources: Resources, clock: FrozenClock
) -> None:
    with session_scope(resources.engine) as session:
        close_school(SchoolRepository(session), school_id=school["school_id"], now=clock.now())
    response = client.post("/v1/agent/heartbeat", json={}, headers=auth(school))
    assert response.status_code == 401  # closing revokes the school's agent keys


@pytest.mark.parametrize(
    ("overrides", "status", "needle"),
    [
        ({"area": "students.shoe_size"}, 422, "unknown data area"),
        ({"batch_id": "not-a-uuid"}, 422, "batch_id"),
        ({"mode": "sideways"}, 422, "mode"),
        ({"extracted_at": "2099-01-01T00:00:00Z"}, 422, "future"),
        ({"extracted_at": "2026-11-23 09:00"}, 422, "extracted_at"),
        ({"records": [{"forename": "X"}]}, 422, "missing id"),
        ({"records": [{"id": "a", "shoe_size": 3}]}, 422, "shoe_size"),
        ({"records": [{"id": "a", "on_roll": "yes"}]}, 422, "on_roll"),
        ({"records": [{"id": "a"}, {"id": "a"}]}, 422, "duplicate id"),
        ({"colour": "red"}, 422, "colour"),
    ],
)
def test_bad_uploads_are_named_and_change_nothing(
    client: TestClient,
    school: dict[str, str],
    clock: FrozenClock,
    overrides: dict[str, Any],
    status: int,
    needle: str,
) -> None:
    response = client.post(
        "/v1/agent/uploads", json=upload_body(clock, **overrides), headers=auth(school)
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.text


def test_field_errors_name_record_index_id_and_field(
    client: TestClient, school: dict[str, str], clock: FrozenClock
) -> None:
    records = [{"id": "ok-1"}, {"id": "bad-2", "date_of_birth": "31/12/2012"}]
    response = client.post(
        "/v1/agent/uploads", json=upload_body(clock, records=records), headers=auth(school)
    )
    problem = response.json()
    assert problem["errors"][0] == {
        "index": 1,
        "record_id": "bad-2",
        "field": "date_of_birth",
        "message": "expected a date YYYY-MM-DD",
    }
    assert problem["error_count"] == 1


def test_oversized_and_gzip_bomb_bodies_are_refused(
    client: TestClient, school: dict[str, str], resources: Resources, clock: FrozenClock
) -> None:
    resources.settings.broker.upload_max_bytes = 50_000
    resources.settings.broker.upload_max_compressed_bytes = 20_000
    big = orjson.dumps(
        upload_body(clock, records=[{"id": f"s{i}", "forename": "x" * 50} for i in range(500)])
    )
    response = client.post(
        "/v1/agent/uploads",
        content=big,
        headers={**auth(school), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
    response = client.post(
        "/v1/agent/uploads",
        content=bomb,
        headers={**auth(school), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert len(bomb) < 20_000


def test_unsupported_encoding_and_corrupt_gzip(
    client: TestClient, school: dict[str, str], clock: FrozenClock
) -> None:
    body = orjson.dumps(upload_body(clock))
    br = client.post(
        "/v1/agent/uploads", content=body, headers={**auth(school), "Content-Encoding": "br"}
    )
    assert br.status_code == 415
    corrupt = gzip.compress(body)[:-12]
    bad = client.post(
        "/v1/agent/uploads", content=corrupt, headers={**auth(school), "Content-Encoding": "gzip"}
    )
    assert bad.status_code == 422
    assert "gzip" in bad.json()["detail"]


def test_heartbeat_records_telemetry_and_hands_out_commands_once_then_again_if_unanswered(
    client: TestClient, school: dict[str, str], resources: Resources, clock: FrozenClock
) -> None:
    with session_scope(resources.engine) as session:
        queued = commands.request_extract(
            session, school_id=school["school_id"], areas=["groups"], reason="test", now=clock.now()
        )
        commands.request_extract(
            session,
            school_id=school["school_id"],
            areas=["contacts"],
            reason="test",
            now=clock.now(),
        )
    telemetry = {
        "agent_version": "1.2.3",
        "os": "Windows Server 2022",
        "cpu_percent": 3.5,
        "last_extraction": {"groups": {"at": "2026-11-23T01:10:00Z", "ok": True, "records": 40}},
    }
    first = client.post("/v1/agent/heartbeat", json=telemetry, headers=auth(school))
    assert first.status_code == 200
    cmds = first.json()["commands"]
    assert [c["id"] for c in cmds] == [queued.id]  # the two extracts were folded into one
    assert cmds[0]["kind"] == "extract"
    assert cmds[0]["args"]["areas"] == ["contacts", "groups"]
    assert (
        client.post("/v1/agent/heartbeat", json={}, headers=auth(school)).json()["commands"] == []
    )
    clock.advance(commands.RESEND_AFTER)
    again = client.post("/v1/agent/heartbeat", json={}, headers=auth(school)).json()["commands"]
    assert [c["id"] for c in again] == [queued.id]

    done = client.post(
        f"/v1/agent/commands/{queued.id}/result", json={"status": "done"}, headers=auth(school)
    )
    assert done.json() == {"id": queued.id, "status": "done"}
    repeat = client.post(
        f"/v1/agent/commands/{queued.id}/result", json={"status": "done"}, headers=auth(school)
    )
    assert repeat.status_code == 200
    conflict = client.post(
        f"/v1/agent/commands/{queued.id}/result", json={"status": "failed"}, headers=auth(school)
    )
    assert conflict.status_code == 409
    clock.advance(commands.RESEND_AFTER)
    assert (
        client.post("/v1/agent/heartbeat", json={}, headers=auth(school)).json()["commands"] == []
    )


def test_command_results_are_per_school(
    client: TestClient, school: dict[str, str], resources: Resources, clock: FrozenClock
) -> None:
    with session_scope(resources.engine) as session:
        other = register_school(
            SchoolRepository(session), name="Other", dfe_number="3024013", urn=None, now=clock.now()
        )
        cmd = commands.queue_command(
            session,
            school_id=other.school.id,
            kind=CommandKind.RESTART,
            args={},
            reason="t",
            now=clock.now(),
        )
    response = client.post(
        f"/v1/agent/commands/{cmd.id}/result", json={"status": "done"}, headers=auth(school)
    )
    assert response.status_code == 404


def test_unanswered_commands_expire(
    resources: Resources, school: dict[str, str], clock: FrozenClock
) -> None:
    with session_scope(resources.engine) as session:
        cmd = commands.queue_command(
            session,
            school_id=school["school_id"],
            kind=CommandKind.CHECK_UPDATE,
            args={},
            reason="t",
            now=clock.now(),
        )
    clock.advance(commands.COMMAND_LIFETIME + timedelta(seconds=1))
    with session_scope(resources.engine) as session:
        assert commands.hand_out(session, school_id=school["school_id"], now=clock.now()) == []
    with Session(resources.engine) as session:
        assert [c.status.value for c in commands.command_history(session, school["school_id"])] == [
            "expired"
        ]
        assert cmd.id


def _read_all(client: TestClient, school_id: str, area: str, clock: FrozenClock) -> dict[str, Any]:
    app = client.app
    cache = app.state.cache  # type: ignore[attr-defined]
    res: Resources = app.state.resources  # type: ignore[attr-defined]
    with session_scope(res.engine) as session:
        page = cache.read_page(
            session,
            school_id=school_id,
            area=area,
            fields=None,
            updated_since=None,
            limit=1000,
            cursor=None,
            now=clock.now(),
        )
    return {r["id"]: r for r in orjson.loads(page.body)["data"]}


def _outbox(res: Resources) -> list[str]:
    with Session(res.engine) as session:
        return [
            e.type for e in session.exec(select(OutboxEvent).order_by(col(OutboxEvent.created_at)))
        ]


def test_upload_applies_once_and_replays_the_first_answer(
    client: TestClient, school: dict[str, str], resources: Resources, clock: FrozenClock
) -> None:
    body = upload_body(
        clock,
        mode="full",
        records=[{"id": "stu-1", "forename": "Amara"}, {"id": "stu-2", "forename": "Ben"}],
    )
    first = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert first.status_code == 200, first.text
    assert first.json() == {
        "batch_id": body["batch_id"],
        "area": "students.basic",
        "applied": 2,
        "deleted": 0,
    }
    again = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert again.json() == first.json()
    assert _outbox(resources) == ["data.updated"]
    assert set(_read_all(client, school["school_id"], "students.basic", clock)) == {
        "stu-1",
        "stu-2",
    }


def test_a_reused_batch_id_with_other_content_is_a_conflict(
    client: TestClient, school: dict[str, str], clock: FrozenClock
) -> None:
    body = upload_body(clock)
    assert client.post("/v1/agent/uploads", json=body, headers=auth(school)).status_code == 200
    body["records"] = [{"id": "stu-9", "forename": "Other"}]
    response = client.post("/v1/agent/uploads", json=body, headers=auth(school))
    assert response.status_code == 409
    assert "different content" in response.json()["detail"]


def test_full_replaces_and_delta_deletes(
    client: TestClient, school: dict[str, str], clock: FrozenClock
) -> None:
    sid = school["school_id"]
    recs = [{"id": f"stu-{i}", "forename": f"N{i}"} for i in range(5)]
    assert (
        client.post(
            "/v1/agent/uploads",
            json=upload_body(clock, mode="full", records=recs),
            headers=auth(school),
        ).status_code
        == 200
    )
    clock.advance(timedelta(hours=1))
    full = client.post(
        "/v1/agent/uploads",
        json=upload_body(clock, mode="full", records=recs[:3]),
        headers=auth(school),
    )
    assert full.json()["deleted"] == 2
    assert set(_read_all(client, sid, "students.basic", clock)) == {"stu-0", "stu-1", "stu-2"}
    clock.advance(timedelta(hours=1))
    delta = client.post(
        "/v1/agent/uploads",
        json=upload_body(
            clock, records=[{"id": "stu-0", "forename": "Changed"}], deleted=["stu-1", "stu-404"]
        ),
        headers=auth(school),
    )
    assert delta.json()["applied"] == 1
    assert delta.json()["deleted"] == 1
    data = _read_all(client, sid, "students.basic", clock)
    assert set(data) == {"stu-0", "stu-2"}
    assert data["stu-0"]["forename"] == "Changed"


def test_an_older_upload_is_refused_with_409(
    client: TestClient, school: dict[str, str], clock: FrozenClock
) -> None:
    newer = upload_body(clock, records=[{"id": "stu-1", "forename": "New"}])
    assert client.post("/v1/agent/uploads", json=newer, headers=auth(school)).status_code == 200
    older = upload_body(
        clock,
        extracted_at=rfc3339(clock.now() - timedelta(hours=3)),
        records=[{"id": "stu-1", "forename": "Old"}],
    )
    response = client.post("/v1/agent/uploads", json=older, headers=auth(school))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert (
        _read_all(client, school["school_id"], "students.basic", clock)["stu-1"]["forename"]
        == "New"
    )


def test_a_rejected_upload_applies_nothing(
    client: TestClient, school: dict[str, str], resources: Resources, clock: FrozenClock
) -> None:
    records = [{"id": f"stu-{i}", "forename": "ok"} for i in range(100)] + [
        {"id": "bad", "on_roll": "maybe"}
    ]
    response = client.post(
        "/v1/agent/uploads", json=upload_body(clock, records=records), headers=auth(school)
    )
    assert response.status_code == 422
    assert _outbox(resources) == []
    cache_response = client.app.state.cache  # type: ignore[attr-defined]
    with session_scope(resources.engine) as session:
        assert cache_response.area_states(session, school["school_id"], clock.now()) == []


def test_gzip_uploads_are_accepted(
    client: TestClient, school: dict[str, str], clock: FrozenClock
) -> None:
    body = gzip.compress(orjson.dumps(upload_body(clock)))
    response = client.post(
        "/v1/agent/uploads",
        content=body,
        headers={**auth(school), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
