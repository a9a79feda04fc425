"""Response headers at the edge, docs off in production, `/metrics` behind a token."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from broker.app import create_app
from broker.settings import Environment
from tests.conftest import make_settings


def test_every_response_is_nosniff_and_credentialed_ones_are_no_store(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.headers["x-content-type-options"] == "nosniff"
    assert "cache-control" not in health.headers
    login = client.post("/v1/admin/login", json={"email": "a@b.c", "password": "x", "totp": "1"})
    assert login.headers["cache-control"] == "no-store"  # the answer that carries a token
    admin = client.get("/v1/admin/partners", headers={"Authorization": "Bearer nope"})
    assert admin.headers["cache-control"] == "no-store"
    assert admin.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in admin.headers


def test_hsts_when_tls_terminates_in_front(app: FastAPI, client: TestClient) -> None:
    app.state.resources.settings.broker.hsts = True
    response = client.get("/healthz")
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_docs_are_off_in_production_and_openapi_stays(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.broker.environment = Environment.PRODUCTION
    # Without the lifespan: neither page needs the database or Redis.
    production = TestClient(create_app(settings))
    assert production.get("/openapi.json").status_code == 200
    assert production.get("/docs").status_code == 404
    assert production.get("/redoc").status_code == 404
    development = TestClient(create_app(make_settings(tmp_path / "dev")))
    docs = development.get("/docs")
    assert docs.status_code == 200
    assert "/docs/static/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "unsafe-inline" not in docs.headers["content-security-policy"]
    assert development.get("/docs/static/app/init.js").status_code == 200
    assert development.get("/redoc").status_code == 404


def test_metrics_need_the_token_when_one_is_set(app: FastAPI, client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200  # development, no token: open
    app.state.resources.settings.broker.metrics_token = SecretStr("m" * 32)
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
    ok = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"


def test_metrics_in_production_without_a_token_are_404(app: FastAPI, client: TestClient) -> None:
    app.state.resources.settings.broker.environment = Environment.PRODUCTION
    assert client.get("/metrics").status_code == 404
