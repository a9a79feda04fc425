"""Inputs that once gave a 500, and the 500 that remains for real bugs: it carries an id."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from broker.routers.partner import read_query

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_limit_of_5000_digits_is_invalid_input_not_an_error() -> None:
    for digits in ("9" * 5000, "-" + "9" * 5000):
        with pytest.raises(RequestValidationError):
            read_query("sch_1", "students.basic", f"limit={digits}".encode())


def test_a_limit_of_5000_digits_on_the_admin_access_log_is_not_a_500(client: TestClient) -> None:
    response = client.get("/v1/admin/access-log", params={"limit": "9" * 5000})
    assert response.status_code in (401, 422)


def test_basic_auth_that_is_not_ascii_is_invalid_client(client: TestClient) -> None:
    response = client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials",
        headers={**FORM, "Authorization": "Basic é".encode("latin-1")},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_a_repeated_oauth_parameter_is_invalid_request(client: TestClient) -> None:
    response = client.post(
        "/oauth/token",
        content=b"grant_type=password&grant_type=client_credentials&client_id=a&client_secret=b",
        headers=FORM,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "grant_type" in response.json()["error_description"]


def test_an_unexpected_error_is_a_500_problem_with_the_request_id(
    app: FastAPI, client: TestClient
) -> None:
    @app.get("/boom-for-test")
    def boom() -> None:
        raise RuntimeError("a bug")

    response = client.get("/boom-for-test", headers={"X-Request-Id": "req-12345678"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-12345678"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == "req-12345678"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_redis_that_is_not_answering_is_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from broker.partners.tokens import TokenCache

    async def down(*_: object, **__: object) -> None:
        raise RedisConnectionError("Error 2 connecting to redis.sock")

    monkeypatch.setattr(TokenCache, "resolve", down)
    response = client.get(
        "/v1/schools/sch_1/data/students.basic", headers={"Authorization": "Bearer mbt_x"}
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    assert "redis.sock" not in response.text
