"""OAuth 2.0 client credentials: standard clients work unchanged; bad credentials are refused."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import redis
from authlib.integrations.httpx_client import OAuth2Client
from fastapi import FastAPI

from broker.clock import FrozenClock
from broker.db import session_scope, upgrade
from broker.partners.repository import PartnerRepository
from broker.resources import Resources
from broker.security import digest_secret
from tests.support.live import live_server
from tests.support.partners import exampro_credentials


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    with live_server(app) as url:
        yield url


@pytest.fixture
def partner(server: str, app: FastAPI, clock: FrozenClock) -> dict[str, str]:
    resources: Resources = app.state.resources
    upgrade(resources.engine)
    client_id, client_secret = exampro_credentials(resources, clock.now())
    return {"client_id": client_id, "client_secret": client_secret}


def test_authlib_client_with_basic_auth(server: str, partner: dict[str, str]) -> None:
    client = OAuth2Client(partner["client_id"], partner["client_secret"])
    token = client.fetch_token(f"{server}/oauth/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert 0 < token["expires_in"] <= 3600
    assert token["access_token"].startswith("mbt_")


def test_authlib_client_with_form_auth(server: str, partner: dict[str, str]) -> None:
    client = OAuth2Client(
        partner["client_id"],
        partner["client_secret"],
        token_endpoint_auth_method="client_secret_post",
    )
    token = client.fetch_token(f"{server}/oauth/token", grant_type="client_credentials")
    assert token["access_token"].startswith("mbt_")


def test_token_responses_are_not_cached(server: str, partner: dict[str, str]) -> None:
    response = httpx.post(
        f"{server}/oauth/token",
        data={"grant_type": "client_credentials", **partner},
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        (
            {"grant_type": "client_credentials", "client_id": "cli_nope", "client_secret": "x"},
            None,
            401,
            "invalid_client",
        ),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        (
            {"grant_type": "password", "username": "a", "password": "b"},
            None,
            400,
            "unsupported_grant_type",
        ),
    ],
)
def test_bad_requests(
    server: str, data: dict[str, str], auth: None, status: int, error: str
) -> None:
    response = httpx.post(f"{server}/oauth/token", data=data)
    assert response.status_code == status
    assert response.json()["error"] == error


def test_wrong_secret_over_basic_is_invalid_client(server: str, partner: dict[str, str]) -> None:
    basic = base64.b64encode(f"{partner['client_id']}:wrong".encode()).decode()
    response = httpx.post(
        f"{server}/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "unknown client or wrong secret",
    }
    assert response.headers["www-authenticate"].startswith("Basic")


def test_two_auth_methods_at_once_is_invalid_request(server: str, partner: dict[str, str]) -> None:
    basic = base64.b64encode(f"{partner['client_id']}:{partner['client_secret']}".encode()).decode()
    response = httpx.post(
        f"{server}/oauth/token",
        data={"grant_type": "client_credentials", **partner},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_json_body_is_refused(server: str, partner: dict[str, str]) -> None:
    response = httpx.post(
        f"{server}/oauth/token", json={"grant_type": "client_credentials", **partner}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def _token(server: str, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{server}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


def _rotate(app: FastAPI, partner_id: str, *extra: str) -> dict[str, Any]:
    settings = app.state.resources.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")},
        "MISBROKER_REDIS_URL": settings.redis_url,
        "MISBROKER_ENVIRONMENT": "test",
    }
    argv = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(settings.data_dir)]
    done = subprocess.run(
        [*argv, "partner", "rotate-secret", partner_id, "--json", *extra],
        capture_output=True,
        env=env,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def _partner_id(app: FastAPI, client_id: str) -> str:
    with session_scope(app.state.resources.engine) as session:
        partner = PartnerRepository(session).by_client_id(client_id)
        assert partner is not None
        return partner.id


def test_rotation_keeps_the_old_secret_for_24_hours(
    server: str, app: FastAPI, partner: dict[str, str], clock: FrozenClock
) -> None:
    rotated = _rotate(app, _partner_id(app, partner["client_id"]))
    assert rotated["client_secret"] != partner["client_secret"]
    assert _token(server, partner["client_id"], rotated["client_secret"]).status_code == 200
    assert _token(server, partner["client_id"], partner["client_secret"]).status_code == 200
    # The CLI ran on the system clock; move the test clock a day past it.
    clock.set(datetime.fromisoformat(rotated["previous_secret_valid_until"].replace("Z", "+00:00")))
    assert _token(server, partner["client_id"], partner["client_secret"]).status_code == 401
    assert _token(server, partner["client_id"], rotated["client_secret"]).status_code == 200


def test_rotation_with_revoke_old_ends_the_old_secret_and_live_tokens(
    server: str, app: FastAPI, partner: dict[str, str]
) -> None:
    old_token = _token(server, partner["client_id"], partner["client_secret"]).json()[
        "access_token"
    ]
    redis_client = redis.Redis.from_url(app.state.resources.settings.redis_url)
    assert redis_client.get(f"mb:pt:{digest_secret(old_token)}") is not None
    rotated = _rotate(app, _partner_id(app, partner["client_id"]), "--revoke-old")
    assert rotated["previous_secret_valid_until"] is None
    assert _token(server, partner["client_id"], partner["client_secret"]).status_code == 401
    assert redis_client.get(f"mb:pt:{digest_secret(old_token)}") is None
    redis_client.close()
