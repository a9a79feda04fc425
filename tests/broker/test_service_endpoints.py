"""/healthz, /readyz, /metrics, /openapi.json, problems and request ids, over real HTTP/ASGI."""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.clock import FrozenClock
from tests.conftest import make_settings
from tests.support.servers import free_port


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_redis_and_blob_store(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "blob_store": "ok"}


def test_readyz_names_redis_when_it_is_down(tmp_path: Path, clock: FrozenClock) -> None:
    settings = make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings, clock=clock)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/not-ready")
    assert body["checks"]["redis"].startswith("down")
    assert body["checks"]["database"] == "ok"
    assert "redis" in body["detail"]


def test_readyz_names_blob_store_when_it_is_unwritable(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, clock: FrozenClock
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the blob directory should be")
    settings = make_settings(tmp_path / "data", redis_url=redis_url)
    settings.cache.blob_dir = blocker / "blobs"
    with TestClient(create_app(settings, clock=clock)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["blob_store"].startswith("down")
    assert body["checks"]["redis"] == "ok"


def test_readyz_names_database_when_it_is_down(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, clock: FrozenClock
) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path,
        redis_url=redis_url,
        database_url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing?connect_timeout=1",
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("down")


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    echoed = client.get("/healthz", headers={"X-Request-Id": "req-abc12345"})
    assert echoed.headers["x-request-id"] == "req-abc12345"
    # An id that could inject into logs is replaced, not echoed.
    hostile = client.get("/healthz", headers={"X-Request-Id": "bad id\twith tabs"})
    assert hostile.headers["x-request-id"] != "bad id\twith tabs"


def test_unknown_route_is_a_problem(client: TestClient) -> None:
    response = client.get("/no/such/thing", headers={"X-Request-Id": "req-notfound1"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404
    assert body["type"] == "/problems/not-found"
    assert body["request_id"] == "req-notfound1"


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/healthz")
    text = client.get("/metrics").text
    assert "misbroker_http_requests_total" in text
    assert 'route="/healthz"' in text
    assert "misbroker_http_request_duration_seconds_bucket" in text


def test_openapi_document_lists_service_endpoints(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path in doc["paths"]
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
