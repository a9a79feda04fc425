"""Schools, admins and partners for the admin API tests, created through the real services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from httpx import Response

from broker import security
from broker.clock import FrozenClock, rfc3339
from broker.consent_wiring import ConsentRuntime
from broker.db import session_scope, upgrade
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import add_admin, register_school
from consent.access_log import LogEntry

PASSWORD = "Corr3ct!horse"
BASIC, CONTACTS, DEMOGRAPHICS, BEHAVIOUR = (
    "students.basic",
    "contacts",
    "students.demographics",
    "behaviour",
)
REQUESTED = (BASIC, CONTACTS, DEMOGRAPHICS)
REASONS = {DEMOGRAPHICS: "Pupil premium reporting", CONTACTS: "Text parents about exams"}


@dataclass
class Admin:
    school_id: str
    email: str
    totp_secret: str
    token: str | None = None
    expires_at: datetime | None = None
    last_step: int = -1

    def code(self, at: datetime) -> str:
        return str(pyotp.TOTP(self.totp_secret).at(at))


@dataclass
class World:
    client: TestClient
    clock: FrozenClock
    resources: Resources
    admin: Admin
    other_admin: Admin
    partner_id: str
    other_partner_id: str
    agent_key: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> ConsentRuntime:
        runtime: ConsentRuntime = self.client.app.state.consent  # type: ignore[attr-defined]
        return runtime

    @property
    def school_id(self) -> str:
        return self.admin.school_id

    def login(self, admin: Admin | None = None, *, code: str | None = None) -> Response:
        who = admin or self.admin
        body = {"email": who.email, "password": PASSWORD, "totp": code or who.code(self.now())}
        response: Response = self.client.post("/v1/admin/login", json=body)
        return response

    def sign_in(self, admin: Admin | None = None) -> Admin:
        who = admin or self.admin
        step = pyotp.TOTP(who.totp_secret).timecode(self.now())
        if step <= who.last_step:  # a code is good once: wait for the next one
            self.clock.advance(timedelta(seconds=30))
            step += 1
        response = self.login(who)
        assert response.status_code == 200, response.text
        who.token = response.json()["token"]
        who.expires_at = datetime.fromisoformat(response.json()["expires_at"])
        who.last_step = step
        return who

    def headers(self, admin: Admin | None = None) -> dict[str, str]:
        who = admin or self.admin
        if who.token is None or who.expires_at is None or self.now() >= who.expires_at:
            self.sign_in(who)  # tests move the clock by days: sign in again as needed
        return {"Authorization": f"Bearer {who.token}"}

    def now(self) -> datetime:
        return self.clock.now()

    def call(self, method: str, path: str, admin: Admin | None = None, **kw: Any) -> Response:
        headers = {**self.headers(admin), **kw.pop("headers", {})}
        response: Response = self.client.request(method, f"/v1/admin{path}", headers=headers, **kw)
        return response

    def grant(self, areas: tuple[str, ...] = (BASIC, CONTACTS), **kw: Any) -> dict[str, Any]:
        body = {"partner_id": self.partner_id, "areas": list(areas), **kw}
        response = self.call("POST", "/consents", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def decision(self, *areas: str, at: datetime | None = None, partner: str | None = None) -> Any:
        params: dict[str, Any] = {"partner_id": partner or self.partner_id, "area": list(areas)}
        if at is not None:
            params["at"] = rfc3339(at)
        response = self.call("GET", "/decision", params=params)
        assert response.status_code == 200, response.text
        return response.json()


def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2id with tiny costs: the tests are about the login rules, not the KDF."""
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(security, "_hasher", hasher)


def build_world(client: TestClient, clock: FrozenClock) -> World:
    resources: Resources = client.app.state.resources  # type: ignore[attr-defined]
    upgrade(resources.engine)
    now = clock.now()
    with session_scope(resources.engine) as session:
        schools = SchoolRepository(session)
        hilltop = register_school(
            schools, name="Hilltop Academy", dfe_number="3024012", urn=None, now=now
        )
        valley = register_school(
            schools, name="Valley School", dfe_number="3024013", urn=None, now=now
        )
        admins = [
            add_admin(
                schools,
                resources.sealer,
                school_id=school.school.id,
                email=email,
                password=PASSWORD,
                now=now,
            )
            for school, email in ((hilltop, "head@hilltop.sch.uk"), (valley, "head@valley.sch.uk"))
        ]
        partners = PartnerRepository(session)
        exampro = register_partner(
            partners,
            resources.sealer,
            name="ExamPro",
            areas=REQUESTED,
            reasons=REASONS,
            webhook_url=None,
            now=now,
        )
        textly = register_partner(
            partners,
            resources.sealer,
            name="Textly",
            areas=(CONTACTS,),
            reasons={},
            webhook_url=None,
            now=now,
        )
    return World(
        client=client,
        clock=clock,
        resources=resources,
        admin=Admin(hilltop.school.id, admins[0].admin.email, admins[0].totp_secret),
        other_admin=Admin(valley.school.id, admins[1].admin.email, admins[1].totp_secret),
        partner_id=exampro.partner.id,
        other_partner_id=textly.partner.id,
        agent_key=hilltop.agent_key,
    )


def log_read(world: World, n: int, school_id: str | None = None, **kw: Any) -> int:
    """Append an access-log entry for a read of `n` records, as the partner read path does."""
    entry = LogEntry(
        **{
            "school_id": school_id or world.school_id,
            "partner_id": world.partner_id,
            "areas": (BASIC,),
            "record_count": n,
            "decision": "allowed",
            "reason": "granted",
            "request_id": f"req-{n}",
            "at": world.now(),
            **kw,
        }
    )
    seq: int = world.client.portal.call(world.runtime.access_log.append, entry)  # type: ignore[union-attr]
    return seq
