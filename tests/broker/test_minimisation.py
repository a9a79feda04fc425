"""Data minimisation through the real HTTP APIs: field approval, request versions,
audiences by year group and pupil, restrictions, and deletions when a pupil leaves a view."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import select

from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.events.models import OutboxEvent
from broker.partners.repository import PartnerRepository
from broker.partners.requests import RequestVersions
from broker.partners.service import register_partner
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import add_admin, register_school
from tests.support.admin import PASSWORD, Admin, World, cheap_argon2

BASIC, BEHAVIOUR, CONTACTS, GROUPS = "students.basic", "behaviour", "contacts", "groups"
REQUEST: dict[str, Any] = {
    "areas": {
        BASIC: {
            "reason": "Exam candidates",
            "fields": {
                "upn": {"required": True, "reason": "Match candidates"},
                "forename": {"required": True, "reason": "Name on the paper"},
                "year_group": {"required": True, "reason": "Which exams"},
                "house": {"required": False, "reason": "House points"},
            },
        },
        BEHAVIOUR: {
            "reason": "Pastoral alerts",
            "fields": {
                "student_id": {"required": True, "reason": "Whose"},
                "description": {"required": True, "reason": "What"},
                "points": {"required": False, "reason": "Totals"},
            },
        },
        CONTACTS: {
            "reason": "Text parents",
            "fields": {
                "surname": {"required": True, "reason": "Greeting"},
                "student_ids": {"required": True, "reason": "Whose parent"},
            },
        },
        GROUPS: {
            "reason": "Classes",
            "fields": {
                "name": {"required": True, "reason": "Class name"},
                "student_ids": {"required": True, "reason": "Members"},
            },
        },
    }
}
PUPILS = {  # id -> year group
    "p1": "Year 10",
    "p2": "Year 10",
    "p3": "Year 11",
    "p4": "Year 11",
}


@dataclass
class Env:
    world: World
    token: str
    agent_key: str

    @property
    def client(self) -> TestClient:
        return self.world.client

    @property
    def school_id(self) -> str:
        return self.world.school_id

    def read(self, area: str, **params: Any) -> Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        response: Response = self.client.get(
            f"/v1/schools/{self.school_id}/data/{area}", params=params, headers=headers
        )
        return response

    def records(self, area: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            response = self.read(area, **params)
            assert response.status_code == 200, response.text
            out += response.json()["data"]
            cursor = response.json()["meta"]["next_cursor"]
            if cursor is None:
                return out
            params["cursor"] = cursor

    def upload(self, area: str, records: list[dict[str, Any]], mode: str = "full") -> None:
        self.world.clock.advance(timedelta(minutes=1))
        body = {
            "batch_id": str(uuid.uuid4()),
            "area": area,
            "mode": mode,
            "extracted_at": rfc3339(self.world.now()),
            "records": records,
            "deleted": [],
        }
        headers = {"Authorization": f"Bearer {self.agent_key}"}
        response = self.client.post("/v1/agent/uploads", json=body, headers=headers)
        assert response.status_code == 200, response.text

    def admin(self, method: str, path: str, **kw: Any) -> Response:
        return self.world.call(method, path, **kw)


def pupil(pid: str, year: str) -> dict[str, Any]:
    return {
        "id": pid,
        "upn": f"UPN{pid}",
        "forename": f"F{pid}",
        "year_group": year,
        "house": "Red",
    }


@pytest.fixture
def env(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> Env:
    cheap_argon2(monkeypatch)
    resources: Resources = client.app.state.resources  # type: ignore[attr-defined]
    now = clock.now()
    with session_scope(resources.engine) as session:
        schools = SchoolRepository(session)
        school = register_school(schools, name="Hilltop", dfe_number="3024012", urn=None, now=now)
        made = add_admin(
            schools,
            resources.sealer,
            school_id=school.school.id,
            email="head@hilltop.sch.uk",
            password=PASSWORD,
            now=now,
        )
        partner = register_partner(
            PartnerRepository(session),
            resources.sealer,
            name="ExamPro",
            areas=[],
            reasons={},
            webhook_url=None,
            now=now,
            request=REQUEST,
        )
    admin = Admin(school.school.id, made.admin.email, made.totp_secret)
    world = World(client, clock, resources, admin, admin, partner.partner.id, "", school.agent_key)
    form = {
        "grant_type": "client_credentials",
        "client_id": partner.partner.client_id,
        "client_secret": partner.client_secret,
    }
    token = client.post("/oauth/token", data=form).json()["access_token"]
    e = Env(world, token, school.agent_key)
    e.upload(BASIC, [pupil(p, y) for p, y in PUPILS.items()])
    e.upload(
        BEHAVIOUR,
        [{"id": f"b{p}", "student_id": p, "description": "late", "points": -1} for p in PUPILS],
    )
    e.upload(
        CONTACTS,
        [
            {"id": "c12", "surname": "Smith", "student_ids": ["p1", "p3"]},
            {"id": "c34", "surname": "Jones", "student_ids": ["p3", "p4"]},
        ],
    )
    e.upload(GROUPS, [{"id": "g1", "name": "10A", "student_ids": sorted(PUPILS)}])
    return e


def grant(env: Env, **kw: Any) -> dict[str, Any]:
    body = {"partner_id": env.world.partner_id, "areas": [BASIC, BEHAVIOUR, CONTACTS, GROUPS], **kw}
    response = env.admin("POST", "/consents", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_grant_shares_required_fields_only_and_unapproved_fields_are_refused(env: Env) -> None:
    extra = {"partner_id": env.world.partner_id, "areas": [BASIC], "fields": {BASIC: ["surname"]}}
    refused = env.admin("POST", "/consents", json=extra)
    assert refused.status_code == 422, refused.text  # the partner did not request it
    consent = grant(env)
    assert consent["fields"][BASIC] == ["forename", "upn", "year_group"]
    rows = env.records(BASIC)
    assert {r["id"] for r in rows} == set(PUPILS)
    assert all(set(r) == {"id", "upn", "forename", "year_group"} for r in rows), rows
    asked = env.read(BASIC, fields="upn,house")
    assert asked.status_code == 403, asked.text
    assert asked.json()["type"].endswith("/consent-required")
    assert asked.json()["missing_fields"] == ["house"]
    log = env.admin("GET", "/access-log").json()["data"]
    served = [e for e in log if e["decision"] == "allowed"]
    assert served[0]["fields"] == ["forename", "upn", "year_group"]
    partners = env.admin("GET", "/partners").json()["data"]
    basic = next(a for a in partners[0]["requested_areas"] if a["area"] == BASIC)
    flags = {f["name"]: (f["required"], f["approved"]) for f in basic["fields"]}
    assert flags == {
        "upn": (True, True),
        "forename": (True, True),
        "year_group": (True, True),
        "house": (False, False),
    }
    assert partners[0]["review_pending"] is False
    # Approving the optional field serves it; removing it again follows the grace rule.
    path = f"/consents/{consent['consent_id']}"
    fields = {BASIC: ["upn", "forename", "year_group", "house"]}
    assert env.admin("PATCH", path, json={"fields": fields}).status_code == 200
    assert all("house" in r for r in env.records(BASIC))
    env.world.clock.advance(timedelta(minutes=1))
    removed_at = env.world.now()
    fields = {BASIC: ["upn", "forename", "year_group"]}
    changed = env.admin("PATCH", path, json={"fields": fields})
    assert changed.status_code == 200, changed.text
    assert "house" in changed.json()["ending_fields"][BASIC]
    assert all("house" in r for r in env.records(BASIC))  # in grace
    env.world.clock.set(removed_at + timedelta(hours=72))
    after = env.records(BASIC)
    assert all("house" not in r for r in after)
    # The field left the view: an updated_since read sends each record again without it.
    delta = env.records(BASIC, updated_since=rfc3339(removed_at))
    assert {r["id"] for r in delta} == set(PUPILS)
    assert all("house" not in r for r in delta)
    # The decision at a moment reports the fields approved then.
    then = env.world.decision(BASIC, at=removed_at - timedelta(seconds=1))
    assert then["areas"][0]["fields"] == ["forename", "house", "upn", "year_group"]
    assert env.world.decision(BASIC)["areas"][0]["fields"] == ["forename", "upn", "year_group"]


def test_an_audience_narrows_every_pupil_linked_area_and_deletes_who_left(env: Env) -> None:
    consent = grant(env)
    assert len(env.records(BASIC)) == 4
    before = env.world.now()
    env.world.clock.advance(timedelta(minutes=1))
    audience = {"year_groups": ["Year 10"], "exclude_students": []}
    response = env.admin("PUT", f"/consents/{consent['consent_id']}/audience", json=audience)
    assert response.status_code == 200, response.text
    assert response.json()["audience"]["year_groups"] == ["Year 10"]
    assert {r["id"] for r in env.records(BASIC)} == {"p1", "p2"}
    assert {r["student_id"] for r in env.records(BEHAVIOUR)} == {"p1", "p2"}
    contacts = env.records(CONTACTS)
    assert contacts == [{"id": "c12", "surname": "Smith", "student_ids": ["p1"]}]
    assert env.records(GROUPS)[0]["student_ids"] == ["p1", "p2"]
    # updated_since from before the change: deletions for exactly the pupils who left.
    delta = env.records(BASIC, updated_since=rfc3339(before))
    assert sorted(delta, key=lambda r: r["id"]) == [
        {"id": "p3", "deleted": True},
        {"id": "p4", "deleted": True},
    ]
    rows = env.records(BEHAVIOUR, updated_since=rfc3339(before))
    assert sorted(r["id"] for r in rows if r.get("deleted")) == ["bp3", "bp4"]
    rows = env.records(CONTACTS, updated_since=rfc3339(before))
    by_id = {r["id"]: r for r in rows}
    assert by_id["c34"] == {"id": "c34", "deleted": True}
    assert by_id["c12"]["student_ids"] == ["p1"]
    # A data.updated for this partner per pupil-linked area of the consent.
    resources: Resources = env.world.resources
    with session_scope(resources.engine) as session:
        events = session.exec(
            select(OutboxEvent).where(
                OutboxEvent.type == "data.updated",
                OutboxEvent.partner_id == env.world.partner_id,
            )
        ).all()
    assert {e.area for e in events} == {BASIC, BEHAVIOUR, CONTACTS, GROUPS}
    # The decision at a moment reports the audience as it stood.
    assert env.world.decision(BASIC, at=before)["areas"][0]["audience"]["year_groups"] is None
    assert env.world.decision(BASIC)["areas"][0]["audience"]["year_groups"] == ["Year 10"]


def test_a_pupil_moving_year_group_mid_sync_leaves_no_record_behind(env: Env) -> None:
    consent = grant(env)
    audience = {"year_groups": ["Year 10"], "exclude_students": []}
    env.admin("PUT", f"/consents/{consent['consent_id']}/audience", json=audience)
    start = env.world.now()
    first = env.read(BASIC, limit=1)
    assert first.status_code == 200, first.text
    synced = {r["id"]: r for r in first.json()["data"]}
    # Mid-sync, p1 moves to Year 11 and p3 to Year 10.
    env.upload(BASIC, [pupil("p1", "Year 11"), pupil("p3", "Year 10")], mode="delta")
    cursor = first.json()["meta"]["next_cursor"]
    while cursor is not None:
        page = env.read(BASIC, limit=1, cursor=cursor)
        assert page.status_code == 200, page.text
        synced |= {r["id"]: r for r in page.json()["data"]}
        cursor = page.json()["meta"]["next_cursor"]
    env.world.clock.advance(timedelta(minutes=1))
    for row in env.records(BASIC, updated_since=rfc3339(start)):
        if row.get("deleted"):
            synced.pop(row["id"], None)
        else:
            synced[row["id"]] = row
    assert set(synced) == {"p2", "p3"}  # exactly Year 10 now
    held = {r["id"] for r in env.records(BEHAVIOUR)}
    for row in env.records(BEHAVIOUR, updated_since=rfc3339(start)):
        if row.get("deleted"):
            held.discard(row["id"])
    assert held == {"bp2", "bp3"}


def test_a_restricted_pupil_goes_to_no_partner(env: Env) -> None:
    grant(env)
    assert len(env.records(BASIC)) == 4
    before = env.world.now()
    env.world.clock.advance(timedelta(minutes=1))
    response = env.admin("POST", "/students/p2/restriction", json={"reason": "safeguarding"})
    assert response.status_code == 200, response.text
    assert "p2" not in {r["id"] for r in env.records(BASIC)}
    assert "p2" not in {r["student_id"] for r in env.records(BEHAVIOUR)}
    assert "p2" not in env.records(GROUPS)[0]["student_ids"]
    delta = env.records(BASIC, updated_since=rfc3339(before))
    assert delta == [{"id": "p2", "deleted": True}]
    assert env.admin("DELETE", "/students/p2/restriction").status_code == 200
    assert "p2" in {r["id"] for r in env.records(BASIC)}
    assert env.admin("DELETE", "/students/p2/restriction").status_code == 404


def test_a_new_request_version_waits_for_the_admin(env: Env) -> None:
    consent = grant(env)
    resources: Resources = env.world.resources
    newer = {"areas": dict(REQUEST["areas"])}
    basic = {**REQUEST["areas"][BASIC]["fields"]}
    basic["surname"] = {"required": False, "reason": "Seating plans"}
    basic["legal_surname"] = {"required": True, "reason": "Certificates"}
    newer["areas"][BASIC] = {"reason": "Exam candidates", "fields": basic}
    with session_scope(resources.engine) as session:
        assert (
            RequestVersions(session).add(env.world.partner_id, newer, env.world.now()).version == 2
        )
    rows = env.records(BASIC)
    assert all(set(r) == {"id", "upn", "forename", "year_group"} for r in rows)  # old approval
    listed = env.admin("GET", "/partners").json()["data"][0]
    assert listed["review_pending"] is True
    assert listed["pending_fields"] == {BASIC: ["surname", "legal_surname"]}  # catalogue order
    refused = env.read(BASIC, fields="legal_surname")
    assert refused.status_code == 403, refused.text
    fields = {BASIC: ["upn", "forename", "year_group", "legal_surname"]}
    path = f"/consents/{consent['consent_id']}"
    assert env.admin("PATCH", path, json={"fields": fields}).status_code == 200
    listed = env.admin("GET", "/partners").json()["data"][0]
    assert listed["review_pending"] is False
    assert all("legal_surname" in r and "surname" not in r for r in env.records(BASIC))


def test_an_access_log_entry_with_fields_is_chained_over_them() -> None:
    from consent.access_log import LogEntry
    from consent.chain import canonical

    entry = LogEntry(
        school_id="sch_1",
        partner_id="prt_1",
        areas=(BASIC,),
        record_count=2,
        decision="allowed",
        reason="granted",
        request_id="r1",
        at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        fields=("forename", "upn"),
    )
    assert entry.canonical() == canonical(entry.chained())
    assert b'"fields":["forename","upn"]' in entry.canonical()
    assert b"fields" not in dataclasses.replace(entry, fields=None).canonical()


def test_an_area_added_by_a_change_shares_its_required_fields_only(env: Env) -> None:
    consent = grant(env, areas=[CONTACTS])
    path = f"/consents/{consent['consent_id']}"
    changed = env.admin("PATCH", path, json={"areas": [CONTACTS, GROUPS]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["fields"][GROUPS] == ["name", "student_ids"]
    refused = env.read(GROUPS, fields="name,group_type")
    assert refused.status_code == 403, refused.text
    assert refused.json()["missing_fields"] == ["group_type"]


def test_pages_narrowed_for_one_partner_never_serve_another(env: Env) -> None:
    """Two partners, the same area and query: each gets its own projection, read after
    read (the second and later reads come from the hot page held in memory)."""
    resources: Resources = env.world.resources
    with session_scope(resources.engine) as session:
        other = register_partner(
            PartnerRepository(session),
            resources.sealer,
            name="Textly",
            areas=[],
            reasons={},
            webhook_url=None,
            now=env.world.now(),
            request=REQUEST,
        )
    form = {
        "grant_type": "client_credentials",
        "client_id": other.partner.client_id,
        "client_secret": other.client_secret,
    }
    other_token = env.client.post("/oauth/token", data=form).json()["access_token"]
    mine = grant(env)
    body = {"partner_id": other.partner.id, "areas": [BASIC], "fields": {BASIC: ["upn", "house"]}}
    theirs = env.admin("POST", "/consents", json=body)
    assert theirs.status_code == 201, theirs.text
    years = {"year_groups": ["Year 11"], "exclude_students": []}
    assert env.admin("PUT", f"/consents/{mine['consent_id']}/audience", json=years).is_success
    path = f"/v1/schools/{env.school_id}/data/{BASIC}"
    for _ in range(3):
        ours = env.read(BASIC)
        other_read = env.client.get(path, headers={"Authorization": f"Bearer {other_token}"})
        assert {r["id"] for r in ours.json()["data"]} == {"p3", "p4"}
        assert all("house" not in r for r in ours.json()["data"])
        assert {r["id"] for r in other_read.json()["data"]} == set(PUPILS)
        assert all(set(r) == {"id", "upn", "house"} for r in other_read.json()["data"])
        assert ours.headers["etag"] != other_read.headers["etag"]
