"""The edge middleware in process: body limits before auth, JSON shape, response headers."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from fastapi.testclient import TestClient

from broker.agenthub.uploads import decode_body, parse_upload
from broker.errors import PayloadTooLargeError
from broker.jsonlimits import shape_problem, too_many_values, value_count


def test_a_declared_body_over_the_limit_is_refused_before_auth(client: TestClient) -> None:
    for path in ("/v1/agent/heartbeat", "/v1/admin/login", "/oauth/token", "/school/sign-in"):
        response = client.post(path, content=b"x" * (64 * 1024 + 1))
        assert response.status_code == 413, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["limit_bytes"] == 64 * 1024
        assert "x-request-id" in response.headers


def test_a_streamed_body_is_counted(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"1," * 1024

    response = client.post("/v1/agent/heartbeat", content=chunks())
    assert response.status_code == 413


def test_an_absurd_content_length_is_refused(client: TestClient) -> None:
    response = client.post(
        "/v1/agent/uploads", content=b"{}", headers={"Content-Length": "9" * 5000}
    )
    assert response.status_code in (400, 413)


def test_deep_json_is_refused_with_a_problem(client: TestClient) -> None:
    for depth in (33, 5000):
        body = b"[" * depth + b"]" * depth
        response = client.post(
            "/v1/agent/heartbeat", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, depth
        assert "deeper than 32" in response.json()["detail"]
    shallow = b"[" * 32 + b"]" * 32
    response = client.post(
        "/v1/agent/heartbeat", content=shallow, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401  # past the edge; the agent key is missing


def test_value_count_ignores_separators_in_strings() -> None:
    assert value_count(b'{"a": "x,y,[{"}') == 1 + 1
    assert too_many_values(b"[" + b"1," * 100 + b"1]", 50)
    assert not too_many_values(b'["' + b"," * 100 + b'"]', 50)


@pytest.mark.parametrize("count", [1, 2, 3, 49, 50, 51, 101])
def test_too_many_values_never_misses_the_densest_json(count: int) -> None:
    """`[1,1,...]` packs a value in every two bytes, the most JSON can: where the length
    alone settles the answer, it is still exact there, and never too low for any body."""
    ones = b"[" + b",".join([b"1"] * count) + b"]"
    values = count + 1  # the array and its items
    assert too_many_values(ones, values) is False
    assert too_many_values(ones, values - 1) is True
    for item in (b"[]", b"{}", b'""', b"[1]"):
        body = b"[" + b",".join([item] * count) + b"]"
        assert too_many_values(body, values - 1) is True, item


def test_shape_problem_names_depth_and_length() -> None:
    assert shape_problem([[[1]]], max_depth=3, max_items=5) is None
    assert "deeper" in (shape_problem([[[[1]]]], max_depth=3, max_items=5) or "")
    assert "6 items" in (shape_problem({"a": [0] * 6}, max_depth=3, max_items=5) or "")


def test_an_upload_of_tiny_values_is_refused_before_it_is_parsed() -> None:
    body = orjson.dumps({"records": [1] * 5000})
    with pytest.raises(PayloadTooLargeError, match="JSON values"):
        parse_upload(body, datetime.now(UTC), max_values=1000)


def test_an_upload_over_the_record_limit_is_refused_before_validation() -> None:
    body = orjson.dumps(
        {
            "batch_id": "6b0b3d1e-9c1e-4a53-8a59-7f0d6f7d2a11",
            "area": "students.basic",
            "mode": "delta",
            "extracted_at": "2026-01-01T00:00:00Z",
            "records": [{"id": f"s{i}"} for i in range(20)],
        }
    )
    with pytest.raises(PayloadTooLargeError, match="at most 10"):
        parse_upload(body, datetime.now(UTC), max_records=10)


def test_inflating_stops_at_the_limit_and_keeps_small_bodies_whole() -> None:
    with pytest.raises(PayloadTooLargeError):
        decode_body(gzip.compress(b"1," * 600_000), "gzip", 1_000_000)
    assert bytes(decode_body(gzip.compress(b"1," * 10), "gzip", 1_000_000)) == b"1," * 10
