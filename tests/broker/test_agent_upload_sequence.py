"""Several uploads in one request (`POST /v1/agent/uploads/sequence`), on SQLite and
PostgreSQL: applied in order, each in its own transaction and at most once, whichever way
it was sent; the first refusal ends the sequence; a bad request applies nothing."""

from __future__ import annotations

import gzip
import hashlib
from datetime import timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.agenthub import ingest as ingest_module
from broker.agenthub.uploads import MAX_SEQUENCE_UPLOADS
from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.errors import ServiceUnavailableError
from broker.resources import Resources
from broker.settings import Settings
from tests.broker.test_agent_api import _read_all, auth, resources, school, upload_body

__all__ = ["resources", "school"]  # fixtures, used by name

SEQUENCE = "/v1/agent/uploads/sequence"


@pytest.fixture
def settings(settings_on_each_database: Settings) -> Settings:
    return settings_on_each_database


def lines(*documents: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(d) for d in documents]


def as_members(items: list[bytes]) -> bytes:
    """As the agent sends a sequence: each upload's gzip as spooled, a newline between."""
    return gzip.compress(b"\n").join(gzip.compress(item) for item in items)


def send(
    client: TestClient, school: dict[str, str], body: bytes, *, encoding: str | None = "gzip"
) -> Any:
    headers = {**auth(school), "Content-Type": "application/x-ndjson"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return client.post(SEQUENCE, content=body, headers=headers)


def batches(res: Resources) -> dict[str, str]:
    """Every batch applied, by batch_id: its body digest."""
    table = ingest_module._BATCHES
    with res.engine.connect() as conn:
        rows = conn.execute(select(table.c.batch_id, table.c.body_digest)).all()
    return {row.batch_id: row.body_digest for row in rows}


def read(client: TestClient, clock: FrozenClock, school_id: str) -> dict[str, Any]:
    return _read_all(client, school_id, "students.basic", clock)


def cached_areas(
    client: TestClient, res: Resources, school_id: str, clock: FrozenClock
) -> set[str]:
    cache = client.app.state.cache  # type: ignore[attr-defined]
    with session_scope(res.engine) as session:
        return {a.area for a in cache.area_states(session, school_id, clock.now())}


def three(clock: FrozenClock) -> list[dict[str, Any]]:
    """Two uploads of one area, in order, and one of another."""
    return [
        upload_body(clock, records=[{"id": "stu-1", "forename": "Amara"}]),
        upload_body(clock, records=[{"id": "stu-1", "forename": "Ama"}, {"id": "stu-2"}]),
        upload_body(clock, area="contacts", records=[{"id": "con-1", "forename": "Bola"}]),
    ]


@pytest.mark.parametrize("form", ["members", "one member", "identity"])
def test_a_sequence_is_applied_in_order_each_once_with_single_upload_digests(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    form: str,
) -> None:
    documents = three(clock)
    items = lines(*documents)
    body = {
        "members": as_members(items),
        "one member": gzip.compress(b"\n".join(items) + b"\n"),
        "identity": b"\n".join(items),
    }[form]
    response = send(client, school, body, encoding=None if form == "identity" else "gzip")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["uploads"] == 3
    assert [(r["index"], r["status"]) for r in answer["results"]] == [(0, 200), (1, 200), (2, 200)]
    assert [r["answer"] for r in answer["results"]] == [
        {
            "batch_id": documents[0]["batch_id"],
            "area": "students.basic",
            "applied": 1,
            "deleted": 0,
        },
        {
            "batch_id": documents[1]["batch_id"],
            "area": "students.basic",
            "applied": 2,
            "deleted": 0,
        },
        {"batch_id": documents[2]["batch_id"], "area": "contacts", "applied": 1, "deleted": 0},
    ]
    # Applied in order: the second upload's name for stu-1 is the one kept.
    students = read(client, clock, school["school_id"])
    assert students["stu-1"]["forename"] == "Ama"
    assert set(students) == {"stu-1", "stu-2"}
    # Each batch is recorded under the digest of its own line, as if it came alone.
    assert batches(resources) == {
        d["batch_id"]: hashlib.sha256(item).hexdigest()
        for d, item in zip(documents, items, strict=True)
    }


def test_a_batch_is_applied_once_however_it_is_sent(
    client: TestClient, school: dict[str, str], resources: Resources, clock: FrozenClock
) -> None:
    documents = three(clock)
    items = lines(*documents)
    alone = client.post(
        "/v1/agent/uploads",
        content=gzip.compress(items[0]),
        headers={**auth(school), "Content-Encoding": "gzip"},
    )
    assert alone.status_code == 200, alone.text
    clock.advance(timedelta(minutes=1))
    sequence = send(client, school, as_members(items))
    assert sequence.status_code == 200, sequence.text
    # The first is a replay of the upload sent alone: the same answer, nothing applied again.
    assert sequence.json()["results"][0]["answer"] == alone.json()
    assert read(client, clock, school["school_id"])["stu-1"]["forename"] == ("Ama")
    # And each of the sequence's uploads sent again alone is a replay too.
    for item, result in zip(items, sequence.json()["results"], strict=True):
        again = client.post("/v1/agent/uploads", content=item, headers=auth(school))
        assert again.status_code == 200, again.text
        assert again.json() == result["answer"]
    assert read(client, clock, school["school_id"])["stu-1"]["forename"] == ("Ama")
    assert len(batches(resources)) == 3
    # The same batch_id with other content is refused in a sequence as it is alone.
    changed = {**documents[2], "records": [{"id": "con-1", "forename": "Other"}]}
    refused = send(client, school, as_members(lines(changed)))
    assert refused.status_code == 200, refused.text
    [result] = refused.json()["results"]
    assert result["status"] == 409
    assert "different content" in result["problem"]["detail"]


@pytest.mark.parametrize(
    ("bad", "status", "slug"),
    [
        ({"records": [{"id": "a", "on_roll": "maybe"}]}, 422, "invalid-upload"),
        ({"area": "students.shoe_size"}, 422, "invalid-upload"),
        ("older", 409, "stale-upload"),
        ("not json", 422, "invalid-upload"),
    ],
)
def test_the_first_refusal_ends_the_sequence_and_what_follows_is_not_applied(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    bad: Any,
    status: int,
    slug: str,
) -> None:
    first, _, last = three(clock)
    if bad == "older":
        middle = lines(upload_body(clock, extracted_at=rfc3339(clock.now() - timedelta(days=1))))
    elif bad == "not json":
        middle = [b'{"batch_id": ']
    else:
        middle = lines(upload_body(clock, **bad))
    response = send(client, school, as_members([*lines(first), *middle, *lines(last)]))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["uploads"] == 3
    assert [(r["index"], r["status"]) for r in answer["results"]] == [(0, 200), (1, status)]
    problem = answer["results"][1]["problem"]
    assert problem["type"] == f"/problems/{slug}"
    assert problem["status"] == status
    assert problem["detail"]
    assert set(batches(resources)) == {first["batch_id"]}  # the third was not tried
    assert cached_areas(client, resources, school["school_id"], clock) == {"students.basic"}


def gzip_bomb_members(count: int, size: int) -> bytes:
    return b"".join(gzip.compress(b" " * size) for _ in range(count))


@pytest.mark.parametrize(
    ("body", "encoding", "status", "needle"),
    [
        (b"", "identity", 422, "no uploads"),
        (b"\n", "identity", 422, "line 1"),
        (b'{"a": 1}\n\n{"b": 2}', "identity", 422, "line 2 of the sequence is blank"),
        (b"{}\n" * (MAX_SEQUENCE_UPLOADS + 1), "identity", 413, "at most"),
        (b"x", "br", 415, "gzip"),
        ("truncated member", "gzip", 422, "truncated"),
        ("trailing garbage", "gzip", 422, "corrupt"),
    ],
)
def test_a_bad_request_is_refused_whole_and_applies_nothing(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    body: Any,
    encoding: str,
    status: int,
    needle: str,
) -> None:
    good = as_members(lines(*three(clock)))
    if body == "truncated member":
        body = good + gzip.compress(b"\n" + orjson.dumps(upload_body(clock)))[:-9]
    elif body == "trailing garbage":
        body = good + b"not gzip at all"
    response = send(client, school, body, encoding=encoding)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert needle in response.json()["detail"]
    assert batches(resources) == {}


def test_members_that_inflate_past_the_limit_together_are_refused(
    client: TestClient, school: dict[str, str], resources: Resources
) -> None:
    limit = resources.settings.broker.upload_max_bytes
    member = limit // 4 + 1  # each well under the limit; five of them over it
    response = send(client, school, gzip_bomb_members(5, member))
    assert response.status_code == 413, response.text
    assert response.json()["limit_bytes"] == limit
    assert batches(resources) == {}


def test_a_fault_not_of_an_upload_fails_the_request_and_a_resend_replays(
    client: TestClient,
    school: dict[str, str],
    resources: Resources,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = lines(*three(clock))
    real, calls = ingest_module.ingest, []

    def database_down_at_the_second(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 2:
            raise ServiceUnavailableError("the database is not answering")
        return real(*args, **kwargs)

    monkeypatch.setattr("broker.routers.agent.ingest", database_down_at_the_second)
    failed = send(client, school, as_members(items))
    assert failed.status_code == 503, failed.text
    assert failed.headers["content-type"] == "application/problem+json"
    assert len(batches(resources)) == 1  # the first was committed before the fault

    again = send(client, school, as_members(items))
    assert again.status_code == 200, again.text
    assert [r["status"] for r in again.json()["results"]] == [200, 200, 200]
    assert len(batches(resources)) == 3
    assert read(client, clock, school["school_id"])["stu-1"]["forename"] == ("Ama")


def test_a_sequence_needs_the_agent_key(client: TestClient, school: dict[str, str]) -> None:
    response = client.post(
        SEQUENCE, content=b"{}", headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_one_upload_in_several_gzip_members_is_inflated_whole(
    client: TestClient, school: dict[str, str], clock: FrozenClock
) -> None:
    """RFC 1952 allows several members; before, all but the first were silently ignored."""
    document = orjson.dumps(upload_body(clock))
    body = gzip.compress(document[:20]) + gzip.compress(document[20:])
    response = client.post(
        "/v1/agent/uploads", content=body, headers={**auth(school), "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["applied"] == 1
