"""The upload decoder and the token endpoint's parsers, fuzzed: no input gets a 5xx (issue 12).

Bodies are built three ways: random JSON, a valid upload with its members swapped for random
JSON, and a valid body's bytes mutated (bits flipped, cut short, bytes inserted), each sent
plain or gzip (whole, cut short or with a flipped byte).  The token endpoint gets random
forms (repeated fields, unknown fields, any text) and random `Authorization` headers, as
bytes: a client is not bound to ASCII.  Example counts are bounded; the app is the real one
in process, with the real database and Redis.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote_plus

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import register_school
from tests.support.partners import exampro_credentials

EXAMPLES = 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


@pytest.fixture
def resources(client: TestClient) -> Resources:
    res: Resources = client.app.state.resources  # type: ignore[attr-defined]
    return res


@pytest.fixture
def agent_key(resources: Resources, clock: FrozenClock) -> str:
    with session_scope(resources.engine) as session:
        created = register_school(
            SchoolRepository(session),
            name="Hilltop",
            dfe_number="3024012",
            urn=None,
            now=clock.now(),
        )
    return created.agent_key


@pytest.fixture
def partner(resources: Resources, clock: FrozenClock) -> tuple[str, str]:
    return exampro_credentials(resources, clock.now())


def _valid_upload(clock: FrozenClock, n: int) -> dict[str, Any]:
    return {
        "batch_id": str(uuid.UUID(int=n)),
        "area": "students.basic",
        "mode": "delta",
        "extracted_at": rfc3339(clock.now() - timedelta(minutes=5)),
        "records": [{"id": "stu-1", "forename": "Amara", "surname": "Okafor"}],
        "deleted": [],
    }


def _dumps(value: Any) -> bytes:
    # Not orjson: integers beyond 64 bits are JSON too.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def _mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """Bits flipped, a cut, bytes inserted: what a broken proxy or a hostile client sends."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(0, 4), label="mutations")):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1), label="at")
        kind = draw(st.sampled_from(("flip", "cut", "insert", "delete")), label="kind")
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7), label="bit")
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8), label="inserted")
        else:
            del data[at]
    return bytes(data)


@st.composite
def upload_requests(draw: st.DrawFn, clock: FrozenClock) -> tuple[bytes, dict[str, str]]:
    valid = _valid_upload(clock, draw(st.integers(0, 2**32), label="batch"))
    how = draw(st.sampled_from(("random", "members", "bytes")), label="how")
    if how == "random":
        raw = _dumps(draw(json_values, label="json"))
    elif how == "members":
        for name in draw(
            st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True), label="n"
        ):
            if draw(st.booleans(), label=f"drop {name}"):
                del valid[name]
            else:
                valid[name] = draw(json_values, label=name)
        raw = _dumps(valid)
    else:
        raw = draw(_mutated(orjson.dumps(valid)), label="mutated")
    headers = {"Content-Type": draw(st.sampled_from(("application/json", "text/plain", "")))}
    if draw(st.booleans(), label="gzip?"):
        headers["Content-Encoding"] = "gzip"
        raw = gzip.compress(raw)
        if draw(st.booleans(), label="mutate gzip?"):
            raw = draw(_mutated(raw), label="mutated gzip")
    return raw, headers


def test_upload_decoder_never_answers_5xx(
    client: TestClient, agent_key: str, clock: FrozenClock
) -> None:
    @FUZZ
    @given(request=upload_requests(clock))
    def check(request: tuple[bytes, dict[str, str]]) -> None:
        body, headers = request
        response = client.post(
            "/v1/agent/uploads",
            content=body,
            headers={**headers, "Authorization": f"Bearer {agent_key}"},
        )
        assert response.status_code < 500, (body[:300], headers, response.text)

    check()


FORM_NAMES = ("grant_type", "client_id", "client_secret", "scope", "x")


@st.composite
def token_forms(draw: st.DrawFn, client_id: str, secret: str) -> bytes:
    """A form body: known and unknown names, repeated or not, any values (some real)."""
    values = st.one_of(
        st.sampled_from(("client_credentials", client_id, secret, "")),
        st.text(max_size=30),
    )
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(FORM_NAMES), values), max_size=6), label="pairs"
    )
    if draw(st.integers(0, 3), label="grant first (3: no)") < 3:
        # Most checks come after the grant type's: reach them most of the time.
        pairs.insert(0, ("grant_type", "client_credentials"))
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs).encode()
    if draw(st.booleans(), label="mutate?"):
        body = draw(_mutated(body), label="mutated form")
    return body


@st.composite
def authorizations(draw: st.DrawFn, client_id: str, secret: str) -> bytes | None:
    """An `Authorization` value as bytes: Basic with good, bad or binary credentials, or junk."""
    header_bytes = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))
    kind = draw(st.sampled_from(("none", "basic", "basic-raw", "junk")), label="auth kind")
    if kind == "none":
        return None
    if kind == "junk":
        return draw(header_bytes, label="junk")
    scheme = draw(st.sampled_from((b"Basic ", b"basic ", b"BASIC  ", b"Bearer ")), label="scheme")
    if kind == "basic-raw":
        return scheme + draw(header_bytes, label="raw")
    user = draw(st.one_of(st.just(client_id), st.text(max_size=20)), label="user")
    password = draw(st.one_of(st.just(secret), st.text(max_size=20)), label="password")
    sep = draw(st.sampled_from((":", "", "::")), label="sep")
    credentials = f"{user}{sep}{password}".encode("utf-8", "surrogatepass")
    if draw(st.booleans(), label="binary?"):
        credentials = draw(st.binary(max_size=30), label="binary credentials")
    return scheme + base64.b64encode(credentials)


def test_token_endpoint_parsers_never_answer_5xx(
    client: TestClient, partner: tuple[str, str]
) -> None:
    client_id, secret = partner

    @FUZZ
    @given(
        form=token_forms(client_id, secret),
        authorization=authorizations(client_id, secret),
        content_type=st.sampled_from(
            (
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=latin-1",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
        ),
    )
    def check(form: bytes, authorization: bytes | None, content_type: str) -> None:
        headers: dict[str, str | bytes] = {"Content-Type": content_type}
        if authorization is not None:
            headers["Authorization"] = authorization
        response = client.post("/oauth/token", content=form, headers=headers)
        assert response.status_code < 500, (form, authorization, response.text)

    check()
