"""The "Agent and data" page: heartbeat, telemetry, freshness, commands and "refresh now"."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlmodel import select

from broker.agenthub.models import AgentCommand
from broker.clock import rfc3339
from broker.db import session_scope
from broker.schools.repository import SchoolRepository
from broker.schools.service import close_school
from consent.models import AuditEvent
from tests.support.admin import World
from tests.support.console import csrf_of, post, submit

# Every test here starts with the admin signed in (`world` is the same object).
pytestmark = pytest.mark.usefixtures("signed_in")


def commands(world: World) -> list[AgentCommand]:
    with session_scope(world.resources.engine) as session:
        return list(session.exec(select(AgentCommand)).all())


def agent_reports(world: World) -> None:
    """A heartbeat with telemetry and one upload, over the agent API."""
    headers = {"Authorization": f"Bearer {world.agent_key}"}
    telemetry = {"agent_version": "1.4.0", "os": "Windows Server 2022", "errors": ["SIMS timeout"]}
    assert world.client.post("/v1/agent/heartbeat", json=telemetry, headers=headers).is_success
    upload = {
        "batch_id": str(uuid.uuid4()),
        "area": "groups",
        "mode": "full",
        "extracted_at": rfc3339(world.now()),
        "records": [{"id": "grp-1", "name": "8B"}],
    }
    assert world.client.post("/v1/agent/uploads", json=upload, headers=headers).is_success


def test_a_silent_agent_with_no_data_says_so(world: World) -> None:
    page = world.client.get("/school/agent")
    assert page.status_code == 200
    assert "<title>Agent and data" in page.text
    assert "Silent" in page.text
    assert "Never" in page.text
    assert "The broker holds no data for your school yet" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_the_page_shows_heartbeat_version_errors_and_freshness(world: World) -> None:
    agent_reports(world)
    page = world.client.get("/school/agent").text
    for text in ("Connected", "1.4.0", "Windows Server 2022", "SIMS timeout", "groups", "Fresh"):
        assert text in page, text
    assert "09:00 on Monday 23 November 2026 (UTC)" in page  # heartbeat and as_of, GOV.UK style


def test_refresh_now_queues_the_chosen_areas_and_says_so(world: World) -> None:
    response = submit(
        world, "/school/agent", "/school/agent/refresh", {"areas": ["groups", "contacts"]}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/school/agent?refreshed=1"
    [command] = commands(world)
    assert command.args == {"areas": ["contacts", "groups"]}
    assert command.reason.startswith("admin:")
    page = world.client.get(response.headers["location"]).text
    assert "govuk-notification-banner--success" in page
    assert "Extract contacts, groups" in page
    assert "Queued" in page
    # The API shows the same command: one service behind both doors.
    api = world.call("GET", "/agent").json()
    assert [c["id"] for c in api["commands"]] == [command.id]
    with session_scope(world.resources.engine) as session:
        stmt = select(AuditEvent).where(AuditEvent.action == "agent.refresh_requested")
        [event] = session.exec(stmt).all()
    assert event.detail["command_id"] == command.id


def test_no_area_chosen_is_an_error_summary_and_nothing_is_queued(world: World) -> None:
    response = submit(world, "/school/agent", "/school/agent/refresh", {})
    assert response.status_code == 422
    assert "govuk-error-summary" in response.text
    assert 'href="#areas"' in response.text
    assert "Select at least one area to refresh" in response.text
    assert commands(world) == []


def test_a_refresh_without_its_csrf_token_is_refused_and_queues_nothing(world: World) -> None:
    response = post(world, "/school/agent/refresh", {"areas": ["groups"]})
    assert response.status_code == 403
    response = post(world, "/school/agent/refresh", {"areas": ["groups"], "csrf_token": "x" * 43})
    assert response.status_code == 403
    assert commands(world) == []


def test_a_closed_school_cannot_ask_for_a_refresh(world: World) -> None:
    page = world.client.get("/school/agent")
    with session_scope(world.resources.engine) as session:
        close_school(SchoolRepository(session), school_id=world.school_id, now=world.now())
    data = {"csrf_token": csrf_of(page.text), "areas": ["groups"]}
    response = post(world, "/school/agent/refresh", data)
    assert response.status_code == 409
    assert commands(world) == []


def test_the_banner_never_echoes_the_query_string(world: World) -> None:
    page = world.client.get("/school/agent", params={"refreshed": "<b>pwned</b>"}).text
    assert "pwned" not in page
    assert "govuk-notification-banner" not in page


def test_a_stranger_is_sent_to_sign_in(world: World) -> None:
    world.client.cookies.clear()
    response = world.client.get("/school/agent", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/school/sign-in?next=")


def test_a_held_deletion_is_shown_first_and_let_through_once(world: World) -> None:
    pupils = [f"stu-{i:03d}" for i in range(40)]

    def upload(ids: list[str]) -> int:
        world.clock.advance(timedelta(minutes=1))
        body = {"batch_id": str(uuid.uuid4()), "area": "students.basic", "mode": "full",
                "extracted_at": rfc3339(world.now()), "deleted": [],
                "records": [{"id": i, "forename": "N"} for i in ids]}  # fmt: skip
        headers = {"Authorization": f"Bearer {world.agent_key}"}
        status: int = world.client.post("/v1/agent/uploads", json=body, headers=headers).status_code
        return status

    assert upload(pupils) == 200
    assert upload(pupils[:2]) == 409  # 38 of 40 would go: held
    home = world.client.get("/school")
    assert "would delete 38 of 40 students.basic records was held" in home.text
    page = world.client.get("/school/agent")
    assert "Deletions waiting for you" in page.text
    assert "Let the deletion of 38 students.basic records through" in page.text
    refused = post(world, "/school/agent/held-deletions/students.basic/confirm", {})
    assert refused.status_code == 403  # no CSRF token: nothing let through
    assert upload(pupils[:2]) == 409
    done = submit(world, "/school/agent", "/school/agent/held-deletions/students.basic/confirm", {})
    assert done.headers["location"] == "/school/agent?deletion=confirmed"
    assert "agent.deletion_confirmed" in audit_actions(world)
    assert upload(pupils[:2]) == 200  # once ...
    assert upload([]) == 409  # ... and the next mass deletion is held again


def audit_actions(world: World) -> list[str]:
    with session_scope(world.resources.engine) as session:
        return [e.action for e in session.exec(select(AuditEvent)).all()]
