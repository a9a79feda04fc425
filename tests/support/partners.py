"""A partner registered through the real service, for tests that need its credentials."""

from __future__ import annotations

from datetime import datetime

from fastapi.testclient import TestClient

from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from broker.resources import Resources


def exampro_credentials(resources: Resources, now: datetime) -> tuple[str, str]:
    """(client_id, client_secret) of a new partner asking for `students.basic`."""
    with session_scope(resources.engine) as session:
        created = register_partner(
            PartnerRepository(session),
            resources.sealer,
            name="ExamPro",
            areas=["students.basic"],
            reasons={},
            webhook_url=None,
            now=now,
        )
    return created.partner.client_id, created.client_secret


def access_token(client: TestClient, client_id: str, client_secret: str) -> str:
    """A partner's bearer token from `POST /oauth/token` (client credentials)."""
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
