"""The HTTP API keeps the promises of its OpenAPI document, checked by schemathesis.

Every operation of `/openapi.json` is fuzzed against a seeded broker (a real uvicorn): a
school with data uploaded, an admin signed in, a partner with a consent, a token and a
webhook delivery, the school's agent with a queued command.  Each generated request goes
with the credential its path group needs (now and then none, or the wrong kind); ids in
paths, queries and bodies are now and then swapped for seeded ones, so the 2xx paths are
reached too, not only the 404s.  Checks: no 5xx; every status code, content type and body
is the documented one.

Nothing is excluded.  `POST /v1/admin/login` is fuzzed like the rest: a lockout counts
failures per email, so random emails cannot lock the seeded admin out (the explicit cases
below check a real login and a wrong code).  The consent operations may revoke or suspend
the seeded consent; the partner operations come first in the document, and a 403 is as
documented as a 200 anyway.  No operation can end the seeded tokens or the agent key.

Hand-made cases then put what random generation seldom reaches through the same checks:
content encodings, ETags, the CSV export, and instants at the very ends of time (each of
those was a 500 before).

Last, stateful sequences along the document's links, with negative data generation: no 5xx
(issue 12).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyotp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.app import create_app
from broker.clock import FrozenClock, rfc3339
from broker.db import make_engine, session_scope, upgrade
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import add_admin, register_school
from broker.webhooks.service import fan_out
from consent.areas import CATALOGUE
from tests.conftest import make_settings
from tests.support.admin import PASSWORD, cheap_argon2
from tests.support.live import live_server

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PUPIL_ID = "pupil-1"  # restrictions take any pupil id
# Valid RFC 3339 with an offset, yet off the UTC timeline (before datetime.min, after max).
BEFORE_TIME = "0001-01-01T00:00:00+01:00"
AFTER_TIME = "9999-12-31T23:59:59-01:00"
BASIC, CONTACTS, DEMOGRAPHICS = "students.basic", "contacts", "students.demographics"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
STUDENTS = [
    {"id": f"stu-{n}", "forename": name, "surname": "Okafor", "on_roll": True}
    for n, name in enumerate(("Amara", "Ben", "Chloe"), start=1)
]

# What is tested is what is served: checked against the live document below.
NDJSON = "application/x-ndjson"


@schemathesis.serializer(NDJSON)
def _ndjson(_: Any, value: Any) -> bytes:
    """An agent's upload sequence: a list of documents one a line (the valid cases below);
    anything else generated (a string, as the document says) as its UTF-8 text."""
    if isinstance(value, list):  # the stdlib's JSON: a negative case may hold any integer
        return b"\n".join(json.dumps(item).encode() for item in value)
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.openapi.from_dict(create_app().openapi())


@dataclass
class Seeded:
    base_url: str
    http: requests.Session
    clock: FrozenClock
    school_id: str
    other_school_id: str
    partner_id: str
    spare_partner_id: str  # requests the same areas, holds no consent yet
    partner_token: str
    admin_token: str
    logout_token: str  # another admin's: signing it out must not sign the run's admin out
    agent_key: str
    consent_id: str
    other_consent_id: str
    command_id: str
    delivery_id: str
    client_id: str
    client_secret: str
    admin_email: str
    totp_secret: str

    def url(self, path: str) -> str:
        return self.base_url + path

    def credentials(self, path: str) -> dict[str, str]:
        """The credential each path group takes."""
        if path == "/v1/admin/logout":
            return {"Authorization": f"Bearer {self.logout_token}"}
        if path.startswith("/v1/admin/") and path != "/v1/admin/login":
            return {"Authorization": f"Bearer {self.admin_token}"}
        if path.startswith("/v1/agent/"):
            return {"Authorization": f"Bearer {self.agent_key}"}
        if path.startswith(("/v1/schools", "/v1/webhooks")):
            return {"Authorization": f"Bearer {self.partner_token}"}
        return {}

    def wrong_credentials(self, path: str) -> dict[str, str]:
        """Another kind's credential: a partner's for an admin path, an admin's elsewhere."""
        if path.startswith("/v1/admin/"):
            return {"Authorization": f"Bearer {self.partner_token}"}
        if path.startswith(("/v1/agent/", "/v1/schools", "/v1/webhooks")):
            return {"Authorization": f"Bearer {self.admin_token}"}
        return {}


def _login(http: requests.Session, base_url: str, email: str, secret: str, at: datetime) -> str:
    body = {"email": email, "password": PASSWORD, "totp": pyotp.TOTP(secret).at(at)}
    response = http.post(f"{base_url}/v1/admin/login", json=body, timeout=10)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Seeded]:
    settings_ = make_settings(tmp_path_factory.mktemp("conformance"), redis_url=redis_url)
    engine = make_engine(settings_.database_url)
    upgrade(engine)
    engine.dispose()
    clock = FrozenClock(T0)
    app = create_app(settings_, clock=clock)
    with (
        pytest.MonkeyPatch.context() as mp,
        live_server(app) as base_url,
        requests.Session() as http,
    ):
        cheap_argon2(mp)
        resources: Resources = app.state.resources
        yield _seed(resources, clock, base_url, http)


def _seed(
    resources: Resources, clock: FrozenClock, base_url: str, http: requests.Session
) -> Seeded:
    now = clock.now()
    with session_scope(resources.engine) as session:
        schools = SchoolRepository(session)
        school = register_school(
            schools, name="Hilltop Academy", dfe_number="3024012", urn=None, now=now
        )
        other = register_school(
            schools, name="Valley School", dfe_number="3024013", urn=None, now=now
        )
        admins = [
            add_admin(
                schools,
                resources.sealer,
                school_id=s.school.id,
                email=e,
                password=PASSWORD,
                now=now,
            )
            for s, e in ((school, "head@hilltop.sch.uk"), (other, "head@valley.sch.uk"))
        ]
        partner = register_partner(
            PartnerRepository(session),
            resources.sealer,
            name="ExamPro",
            areas=(BASIC, CONTACTS, DEMOGRAPHICS),
            reasons={DEMOGRAPHICS: "Pupil premium reporting"},
            webhook_url="https://exampro.example/hooks",
            now=now,
        )
        spare = register_partner(
            PartnerRepository(session),
            resources.sealer,
            name="Textly",
            areas=(BASIC, CONTACTS),
            reasons={},
            webhook_url=None,
            now=now,
        )
    admin_token = _login(http, base_url, admins[0].admin.email, admins[0].totp_secret, now)
    other_token = _login(http, base_url, admins[1].admin.email, admins[1].totp_secret, now)
    consent_ids = []
    for token in (admin_token, other_token):
        response = http.post(
            f"{base_url}/v1/admin/consents",
            json={"partner_id": partner.partner.id, "areas": [BASIC, CONTACTS]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        consent_ids.append(response.json()["consent_id"])
    agent = {"Authorization": f"Bearer {school.agent_key}"}
    upload: dict[str, Any] = {
        "batch_id": str(uuid.uuid4()),
        "area": BASIC,
        "mode": "full",
        "extracted_at": rfc3339(now),
        "records": STUDENTS,
        "deleted": [],
    }
    response = http.post(f"{base_url}/v1/agent/uploads", json=upload, headers=agent, timeout=10)
    assert response.status_code == 200, response.text
    form = {
        "grant_type": "client_credentials",
        "client_id": partner.partner.client_id,
        "client_secret": partner.client_secret,
    }
    with session_scope(resources.engine) as session:
        # The fuzzer makes hundreds of partner calls a minute (429: test_partner_api.py).
        row = PartnerRepository(session).get(partner.partner.id)
        assert row is not None
        row.rate_limit_per_minute = 1_000_000
        session.add(row)
    response = http.post(f"{base_url}/oauth/token", data=form, timeout=10)
    assert response.status_code == 200, response.text
    partner_token = response.json()["access_token"]
    bearer = {"Authorization": f"Bearer {partner_token}"}
    # Contacts are consented but not cached: the read queues an extraction for the agent.
    response = http.get(
        f"{base_url}/v1/schools/{school.school.id}/data/{CONTACTS}", headers=bearer, timeout=10
    )
    assert response.status_code == 202, response.text
    response = http.post(f"{base_url}/v1/agent/heartbeat", json={}, headers=agent, timeout=10)
    assert response.status_code == 200, response.text
    [command] = response.json()["commands"]
    with session_scope(resources.engine) as session:
        fan_out(session, lambda *_: [], now)
    response = http.get(f"{base_url}/v1/webhooks/deliveries", headers=bearer, timeout=10)
    assert response.status_code == 200, response.text
    delivery_id = response.json()["data"][0]["id"]
    return Seeded(
        base_url=base_url,
        http=http,
        clock=clock,
        school_id=school.school.id,
        other_school_id=other.school.id,
        partner_id=partner.partner.id,
        spare_partner_id=spare.partner.id,
        partner_token=partner_token,
        admin_token=admin_token,
        logout_token=other_token,
        agent_key=school.agent_key,
        consent_id=consent_ids[0],
        other_consent_id=consent_ids[1],
        command_id=command["id"],
        delivery_id=delivery_id,
        # The fuzzer mints tokens with these: a spare client's, since minting more than ten
        # revokes the oldest, and the run's partner token must outlive the run.
        client_id=spare.partner.client_id,
        client_secret=spare.client_secret,
        admin_email=admins[0].admin.email,
        totp_secret=admins[0].totp_secret,
    )


DROP = object()  # a seeded "value" that takes the member out (a random cursor is just a 400)


def _seeded_values(seeded: Seeded) -> dict[str, list[Any]]:
    """Known-good values for parameters and body members, by name."""
    return {
        "school_id": [seeded.school_id, seeded.other_school_id],
        "area": [BASIC, CONTACTS, DEMOGRAPHICS, "timetable"],
        "consent_id": [seeded.consent_id, seeded.other_consent_id],
        "command_id": [seeded.command_id],
        "delivery_id": [seeded.delivery_id],
        "student_id": [PUPIL_ID],
        "partner_id": [seeded.partner_id, seeded.spare_partner_id],
        "fields": ["forename,surname", "upn"],
        "updated_since": [rfc3339(T0 - timedelta(days=1)), BEFORE_TIME, AFTER_TIME],
        **{
            name: [rfc3339(T0 - timedelta(days=1)), rfc3339(T0 + timedelta(days=1)), BEFORE_TIME]
            for name in ("since", "until", "at", "end_at")
        },
        "cursor": [DROP],
        "accept": ["text/csv", "application/json", "text/csv;q=0.9, application/json"],
        "areas": [[BASIC], [BASIC, CONTACTS], [DEMOGRAPHICS]],
        "grant_type": ["client_credentials"],
        "client_id": [seeded.client_id],
        "client_secret": [seeded.client_secret],
    }


def _swap(container: Any, known: dict[str, list[Any]], data: st.DataObject, where: str) -> None:
    """Now and then (three times in four) put seeded values where random ones were."""
    if not isinstance(container, dict):
        return
    for name in sorted(container):
        if (
            name in known
            and data.draw(st.integers(0, 3), label=f"{where} {name} (3: as generated)") < 3
        ):
            value = data.draw(st.sampled_from(known[name]), label=f"{where} {name}")
            if value is DROP:
                del container[name]
            else:
                container[name] = value


def _valid_upload(seeded: Seeded, data: st.DataObject) -> dict[str, Any]:
    records = data.draw(st.sampled_from((STUDENTS, STUDENTS[:1], [])), label="records")
    return {
        "batch_id": str(uuid.UUID(int=data.draw(st.integers(0, 2**32), label="batch"))),
        "area": BASIC,
        "mode": data.draw(st.sampled_from(("full", "delta")), label="mode"),
        "extracted_at": rfc3339(seeded.clock.now()),
        "records": records,
        "deleted": [],
    }


@schema.parametrize()
@schema.given(data=st.data())
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_response_is_documented(case: Any, data: st.DataObject, seeded: Seeded) -> None:
    known = _seeded_values(seeded)
    _swap(case.path_parameters, known, data, "path")
    _swap(case.query, known, data, "query")
    _swap(case.body, known, data, "body")
    if case.path == "/v1/agent/uploads" and data.draw(st.booleans(), label="valid upload?"):
        case.body = _valid_upload(seeded, data)
    if case.path == SEQUENCE and data.draw(st.booleans(), label="valid sequence?"):
        count = data.draw(st.integers(1, 3), label="uploads")
        case.body = [_valid_upload(seeded, data) for _ in range(count)]
    auth = data.draw(st.sampled_from(("right", "right", "right", "none", "wrong")), label="auth")
    headers = dict(case.headers or {})
    headers.pop("Authorization", None)
    _swap(headers, known, data, "header")
    if auth == "right":
        headers |= seeded.credentials(case.path)
    elif auth == "wrong":
        headers |= seeded.wrong_credentials(case.path)
    case.headers = headers
    response = case.call(base_url=seeded.base_url, session=seeded.http)
    case.validate_response(response, checks=CHECKS)
    _problem_ok(response)


def _header(response: Any, name: str) -> str:
    """One header of a `requests` or a schemathesis response (which keeps lists)."""
    value = response.headers.get(name) or ""
    return value[0] if isinstance(value, list) else str(value)


def _problem_ok(response: Any) -> None:
    assert _header(response, "x-request-id"), "every response carries X-Request-Id"
    if _header(response, "content-type").startswith("application/problem+json"):
        assert response.json()["status"] == response.status_code, response.text


def test_the_document_tested_is_the_one_served(seeded: Seeded) -> None:
    served = seeded.http.get(seeded.url("/openapi.json"), timeout=10)
    assert served.status_code == 200
    assert served.json() == schema.raw_schema


def test_admin_login_explicit_cases(seeded: Seeded) -> None:
    """Login, fuzzed above with random emails, with the seeded admin's real credentials."""
    url = seeded.url("/v1/admin/login")
    seeded.clock.advance(timedelta(minutes=1))  # a fresh TOTP step
    now = seeded.clock.now()
    totp = pyotp.TOTP(seeded.totp_secret)
    good = {totp.at(now + timedelta(seconds=d)) for d in (-30, 0, 30)}
    bad = next(c for c in ("000000", "000001", "000002", "000003") if c not in good)
    wrong = {"email": seeded.admin_email, "password": PASSWORD, "totp": bad}
    refused = seeded.http.post(url, json=wrong, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    code = totp.at(now)
    body = {"email": seeded.admin_email, "password": PASSWORD, "totp": code}
    accepted = seeded.http.post(url, json=body, timeout=10)
    assert accepted.status_code == 200, accepted.text
    assert set(accepted.json()) == {"token", "school_id", "expires_at"}
    assert accepted.json()["school_id"] == seeded.school_id
    replayed = seeded.http.post(url, json=body, timeout=10)
    assert replayed.status_code == 401  # a code is good once


def test_every_area_is_a_documented_read(seeded: Seeded) -> None:
    """Every catalogue area, read with the seeded token: each answer as documented."""
    operation = schema["/v1/schools/{school_id}/data/{area}"]["GET"]
    headers = seeded.credentials("/v1/schools")
    for area in CATALOGUE:
        path_parameters = {"school_id": seeded.school_id, "area": area}
        case = operation.Case(path_parameters=path_parameters, headers=headers)
        response = case.call(base_url=seeded.base_url, session=seeded.http)
        case.validate_response(response, checks=CHECKS)
        _problem_ok(response)
        if area not in (BASIC, CONTACTS, DEMOGRAPHICS):
            # Never requested, so never granted, whatever the fuzzer did to the consent.
            assert response.status_code == 403, (area, response.text)


def _gzip_bomb() -> bytes:
    return gzip.compress(b'{"records": [' + b" " * (64 * 1024 * 1024) + b"]}")


JSON = {"Content-Type": "application/json"}
GZIP = {**JSON, "Content-Encoding": "gzip"}
NDJSON_TYPE = {"Content-Type": NDJSON}
NDJSON_GZIP = {**NDJSON_TYPE, "Content-Encoding": "gzip"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class HandMade:
    method: str
    path: str  # the document's template: its parameters get seeded values
    status: int
    body: bytes | Callable[[], bytes] | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    if_none_match: bool = False  # send the ETag of a first read


UPLOADS, SEQUENCE, DATA, LOG = (
    "/v1/agent/uploads",
    "/v1/agent/uploads/sequence",
    "/v1/schools/{school_id}/data/{area}",
    "/v1/admin/access-log",
)
HAND_MADE = {
    "corrupt gzip upload": HandMade("POST", UPLOADS, 422, b"\x1f\x8bnot", GZIP),
    "brotli upload": HandMade("POST", UPLOADS, 415, b"{}", {**JSON, "Content-Encoding": "br"}),
    "gzip bomb upload": HandMade("POST", UPLOADS, 413, _gzip_bomb, GZIP),
    "upload not JSON": HandMade("POST", UPLOADS, 422, b"{oops", JSON),
    "upload not UTF-8": HandMade("POST", UPLOADS, 422, b"\xff\xfe", JSON),
    "sequence, corrupt gzip": HandMade("POST", SEQUENCE, 422, b"\x1f\x8bnot", NDJSON_GZIP),
    "sequence, gzip bomb": HandMade("POST", SEQUENCE, 413, _gzip_bomb, NDJSON_GZIP),
    "sequence, blank line": HandMade("POST", SEQUENCE, 422, b"{}\n\n{}", NDJSON_TYPE),
    "sequence, a line not JSON": HandMade("POST", SEQUENCE, 200, b"{oops", NDJSON_TYPE),
    "sequence, not UTF-8": HandMade("POST", SEQUENCE, 200, b"\xff\xfe", NDJSON_TYPE),
    "heartbeat not UTF-8": HandMade("POST", "/v1/agent/heartbeat", 400, b'{"os": "\xff"}', JSON),
    "grant not JSON": HandMade("POST", "/v1/admin/consents", 422, b"{oops", JSON),
    "token over JSON": HandMade(
        "POST", "/oauth/token", 400, b'{"grant_type": "client_credentials"}', JSON
    ),
    "not modified": HandMade("GET", DATA, 304, if_none_match=True),
    "access log as CSV": HandMade("GET", LOG, 200, headers={"Accept": "text/csv"}),
    # Each of these was a 500 (OverflowError binding the instant or the number to SQL).
    "updated_since before time": HandMade("GET", DATA, 400, query={"updated_since": BEFORE_TIME}),
    "updated_since after time": HandMade("GET", DATA, 400, query={"updated_since": AFTER_TIME}),
    "access log since before time": HandMade("GET", LOG, 422, query={"since": BEFORE_TIME}),
    "access log until after time": HandMade("GET", LOG, 422, query={"until": AFTER_TIME}),
    "access log CSV since before time": HandMade(
        "GET", LOG, 422, headers={"Accept": "text/csv"}, query={"since": BEFORE_TIME}
    ),
    "access log cursor past 64 bits": HandMade(
        "GET", LOG, 422, query={"cursor": _b64(b"seq:" + b"9" * 25)}
    ),
    "decision at before time": HandMade(
        "GET", "/v1/admin/decision", 422, query={"area": BASIC, "at": BEFORE_TIME}
    ),
    "revoke end_at after time": HandMade(
        "POST", "/v1/admin/consents/{consent_id}/revoke", 422, {"end_at": AFTER_TIME}
    ),
    "deliveries cursor before time": HandMade(
        "GET",
        "/v1/webhooks/deliveries",
        422,
        query={"cursor": _b64(orjson.dumps([BEFORE_TIME, "msg_x"]))},
    ),
    "upload extracted_at before time": HandMade(
        "POST",
        UPLOADS,
        422,
        {
            "batch_id": str(uuid.UUID(int=7)),
            "area": BASIC,
            "mode": "delta",
            "extracted_at": BEFORE_TIME,
            "records": [],
            "deleted": [],
        },
    ),
}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_hand_made_requests_are_documented(seeded: Seeded, name: str) -> None:
    """What the fuzzer seldom sends (encodings, ETags, CSV, instants at the ends of time),
    checked by the same checks."""
    made = HAND_MADE[name]
    operation = schema[made.path][made.method]
    path_parameters = {
        "school_id": seeded.school_id,
        "area": BASIC,
        "consent_id": seeded.consent_id,
    }
    url = seeded.url(made.path.format(**path_parameters))
    headers = {**seeded.credentials(made.path), **made.headers}
    query = dict(made.query)
    if made.path == "/v1/admin/decision":
        query.setdefault("partner_id", seeded.partner_id)
    body = made.body() if callable(made.body) else made.body
    if isinstance(body, dict):
        body, headers = orjson.dumps(body), {**JSON, **headers}
    if made.if_none_match:
        first = seeded.http.get(url, headers=headers, timeout=10)
        assert first.status_code == 200, first.text
        headers["If-None-Match"] = first.headers["etag"]
    response = seeded.http.request(
        made.method, url, headers=headers, params=query, data=body, timeout=30
    )
    assert response.status_code == made.status, response.text
    used = {k: v for k, v in path_parameters.items() if "{" + k + "}" in made.path}
    case = operation.Case(path_parameters=used, headers=headers, query=query)
    case.validate_response(response, checks=CHECKS)
    _problem_ok(response)


# Stateful: sequences of calls along the document's links, with data that breaks the schema
# (negative generation) as well as data that fits it.  Schemathesis infers links between the
# consent, partner, school, delivery and command operations; the links added below make
# every other operation reachable too (to and from `GET /healthz`, seeded ids in paths).
STATEFUL_STEPS = 10
STATEFUL_RESTARTS = 10
# Mixed sequences send valid data mostly (one step in ten is negative, so chains go deep);
# the negative-only sequences break the schema at every step.
STATEFUL_RUNS = (
    ([GenerationMode.POSITIVE, GenerationMode.NEGATIVE], 150),
    ([GenerationMode.NEGATIVE], 100),
)
TOP_UP_EXAMPLES = 10  # per mode, for an operation that no sequence happened to reach


@dataclass(frozen=True)
class ServerError:
    method: str
    path: str
    status: int
    query: Any
    body: Any
    error: str  # the exception the server logged: type and message

    def __str__(self) -> str:
        return (
            f"{self.status} {self.method} {self.path} query={self.query!r} "
            f"body={self.body!r:.300} -> {self.error}"
        )


class _LoggedErrors(logging.Handler):
    """The exceptions behind 500s, as the problem handler logs them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.last = f"{type(exc).__name__}: {str(exc)[:200]}"


@dataclass
class Exerciser:
    """Sends a case with its path group's credential and collects every distinct 5xx."""

    seeded: Seeded
    logged: _LoggedErrors
    found: dict[tuple[str, str, int, str], ServerError] = field(default_factory=dict)
    reached: set[str] = field(default_factory=set)
    scenarios: int = 0

    def prepare(self, case: Any) -> None:
        headers = dict(case.headers or {})
        headers.pop("Authorization", None)
        case.headers = headers | self.seeded.credentials(case.path)

    def record(self, case: Any, response: Any) -> None:
        self.reached.add(f"{case.method} {case.path}")
        if response.status_code >= 500:
            error = self.logged.last or _header(response, "content-type")
            key = (case.method, case.path, response.status_code, error)
            self.found.setdefault(
                key,
                ServerError(
                    case.method, case.path, response.status_code, case.query, case.body, error
                ),
            )
        self.logged.last = ""

    def send(self, case: Any) -> None:
        self.prepare(case)
        response = case.call(base_url=self.seeded.base_url, session=self.seeded.http)
        self.record(case, response)


def _linked_document(seeded: Seeded) -> dict[str, Any]:
    """The served document, plus links from `GET /healthz` to every operation and back."""
    doc: dict[str, Any] = copy.deepcopy(schema.raw_schema)
    ids = {
        "school_id": seeded.school_id,
        "area": BASIC,
        "consent_id": seeded.consent_id,
        "command_id": seeded.command_id,
        "delivery_id": seeded.delivery_id,
        "write_id": "wrt_0000000000nosuchwrite000",  # answers 404 (documented)
        "student_id": PUPIL_ID,
    }
    healthz = doc["paths"]["/healthz"]["get"]
    links = {}
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            names = re.findall(r"{(\w+)}", path)
            links[f"to_{operation['operationId']}"] = {
                "operationId": operation["operationId"],
                "parameters": {f"path.{name}": ids[name] for name in names},
            }
            # ... and back: a sequence may start at any operation that is a link's source.
            status = min(code for code in operation["responses"] if code.startswith("2"))
            back = operation["responses"][status].setdefault("links", {})
            back["to_healthz"] = {"operationId": healthz["operationId"]}
    healthz["responses"]["200"]["links"] = links
    return doc


def _run_sequences(stateful: Any, exerciser: Exerciser, examples: int) -> None:
    class Machine(stateful.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            exerciser.scenarios += 1

        def before_call(self, case: Any) -> None:
            exerciser.prepare(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": exerciser.seeded.base_url, "session": exerciser.seeded.http}

        def validate_response(self, response: Any, case: Any, *_: Any, **__: Any) -> None:
            exerciser.record(case, response)

    start = exerciser.scenarios
    # Which links a step may follow depends on what the server answered before, so a
    # replay can diverge (hypothesis' Flaky): start again, as schemathesis' own runner does.
    for _ in range(STATEFUL_RESTARTS):
        left = examples - (exerciser.scenarios - start)
        if left <= 0:
            return
        try:
            Machine.run(
                settings=settings(
                    max_examples=left,
                    stateful_step_count=STATEFUL_STEPS,
                    phases=[Phase.generate],
                    database=None,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
            )
            return
        except Flaky:
            continue


def _top_up(stateful: Any, exerciser: Exerciser, label: str) -> None:
    """A few single calls, both modes, to an operation no sequence happened to reach."""
    method, path = label.split(" ", 1)
    operation = stateful[path][method]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=TOP_UP_EXAMPLES,
            phases=[Phase.generate],
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            exerciser.send(case)

        call()


def test_stateful_sequences_with_negative_data_never_get_a_5xx(seeded: Seeded) -> None:
    """Every operation, reached along links, with positive and negative data: no 5xx.

    A 5xx does not stop the run: every distinct one is collected, so that one run lists
    them all (operation, input and the exception the server logged)."""
    stateful = schemathesis.openapi.from_dict(_linked_document(seeded))
    logged = _LoggedErrors()
    exerciser = Exerciser(seeded, logged)
    problems_log = logging.getLogger("broker.problems")
    problems_log.addHandler(logged)
    try:
        for modes, examples in STATEFUL_RUNS:
            stateful.config.generation.update(modes=modes, max_examples=examples)
            _run_sequences(stateful, exerciser, examples)
        operations = {
            f"{m.upper()} {p}" for p, ops in schema.raw_schema["paths"].items() for m in ops
        }
        for label in sorted(operations - exerciser.reached):
            _top_up(stateful, exerciser, label)
    finally:
        problems_log.removeHandler(logged)
    assert not exerciser.found, "\n".join(str(e) for e in exerciser.found.values())
    total = sum(examples for _, examples in STATEFUL_RUNS)
    assert exerciser.scenarios >= total / 2, f"only {exerciser.scenarios} sequences ran"
    assert exerciser.reached == operations, sorted(operations - exerciser.reached)
