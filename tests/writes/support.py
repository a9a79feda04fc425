"""A school with pupils, an agent that can write, and a partner asking to write back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from tests.support.admin import World, build_world
from tests.support.partners import access_token

BASIC, MARKS, BEHAVIOUR = "students.basic", "attendance.marks", "behaviour"
WRITE_AREAS = (BASIC, MARKS, BEHAVIOUR)
PUPILS = [f"stu-{n:06d}" for n in range(1, 6)]


@dataclass
class WritingPartner:
    world: World
    partner_id: str
    token: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def write(self, area: str, records: Any, key: str | None = "k1", school: str = "") -> Response:
        school_id = school or self.world.school_id
        response: Response = self.world.client.post(
            f"/v1/schools/{school_id}/writes/{area}",
            json={"records": records},
            headers=self.headers(key),
        )
        return response

    def get(self, path: str, **kw: Any) -> Response:
        response: Response = self.world.client.get(f"/v1{path}", headers=self.headers(), **kw)
        return response

    def grant(self, mode: str = "read_write", areas: tuple[str, ...] = WRITE_AREAS) -> str:
        body = {"partner_id": self.partner_id, "areas": list(areas), "mode": mode}
        response = self.world.call("POST", "/consents", json=body)
        assert response.status_code == 201, response.text
        consent_id: str = response.json()["consent_id"]
        return consent_id


def writing_world(client: TestClient, clock: FrozenClock) -> tuple[World, WritingPartner]:
    world = build_world(client, clock)
    world.sign_in()
    return world, add_writing_partner(world)


def add_writing_partner(world: World) -> WritingPartner:
    """A partner asking to write, pupils at the school, and an agent that can write."""
    with session_scope(world.resources.engine) as session:
        created = register_partner(
            PartnerRepository(session),
            world.resources.sealer,
            name="Registerly",
            areas=WRITE_AREAS,
            reasons={BEHAVIOUR: "Record merits from the classroom app"},
            webhook_url=None,
            now=world.now(),
        )
    token = access_token(world.client, created.partner.client_id, created.client_secret)
    partner = WritingPartner(world, created.partner.id, token)
    upload_pupils(world)
    heartbeat(world, write_areas=[MARKS, BEHAVIOUR])
    return partner


def agent_headers(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.agent_key}"}


def upload_pupils(world: World) -> None:
    body = {
        "batch_id": str(uuid.uuid4()),
        "area": BASIC,
        "mode": "full",
        "extracted_at": rfc3339(world.now()),
        "records": [{"id": p, "forename": "Pat", "surname": "Doe"} for p in PUPILS],
        "deleted": [],
    }
    response = world.client.post("/v1/agent/uploads", json=body, headers=agent_headers(world))
    assert response.status_code == 200, response.text


def heartbeat(world: World, write_areas: list[str]) -> dict[str, Any]:
    telemetry = {"agent_version": "test", "capabilities": {"write_areas": write_areas}}
    response = world.client.post(
        "/v1/agent/heartbeat", json=telemetry, headers=agent_headers(world)
    )
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def marks(count: int, mark: str = "/") -> list[dict[str, Any]]:
    return [
        {"student_id": PUPILS[i % len(PUPILS)], "date": f"2026-01-{1 + i // 2:02d}",
         "session": "AM" if i % 2 == 0 else "PM", "mark": mark}
        for i in range(count)
    ]  # fmt: skip


def behaviour_events(description: str = "Helped a classmate") -> list[dict[str, Any]]:
    return [
        {"student_id": PUPILS[0], "type": "Merit", "date": "2026-01-05",
         "description": description, "points": 1},
        {"student_id": PUPILS[1], "type": "Disruption", "date": "2026-01-05",
         "description": "Talking in assembly", "points": -1},
    ]  # fmt: skip
