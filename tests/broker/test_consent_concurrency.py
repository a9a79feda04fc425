"""Concurrent changes to one consent against a real API server, on SQLite and PostgreSQL: 200 or
409, never 500."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from broker.app import create_app
from broker.clock import FrozenClock
from broker.settings import Settings
from consent.models import ConsentEventRow
from tests.support.admin import BASIC, CONTACTS, DEMOGRAPHICS, World, build_world, cheap_argon2
from tests.support.live import live_server

CALLS = 24
AREA_SETS = ([BASIC], [BASIC, CONTACTS], [BASIC, DEMOGRAPHICS], [CONTACTS])


@pytest.fixture
def settings(settings_on_each_database: Settings) -> Settings:
    """The lockout and consent serialization are per database: SQLite's BEGIN IMMEDIATE and
    PostgreSQL's locks are both under test."""
    return settings_on_each_database


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    world = build_world(client, clock)
    world.sign_in()
    return world


def request_for(i: int, consent_id: str) -> tuple[str, str, dict[str, Any]]:
    base = f"/v1/admin/consents/{consent_id}"
    match i % 3:
        case 0:
            return "PATCH", base, {"areas": AREA_SETS[i % len(AREA_SETS)]}
        case 1:
            return "POST", f"{base}/suspend", {"reason": f"check {i}"}
        case _:
            return "POST", f"{base}/resume", {"reason": f"done {i}"}


def test_concurrent_patch_suspend_and_resume_on_one_consent_give_200_or_409_never_500(
    world: World, settings: Settings, clock: FrozenClock
) -> None:
    consent_id = world.grant()["consent_id"]
    headers = world.headers()
    start = threading.Barrier(CALLS)

    with live_server(create_app(settings, clock=clock)) as url:

        def call(i: int) -> httpx.Response:
            method, path, body = request_for(i, consent_id)
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                start.wait()
                return http.request(method, path, json=body)

        with ThreadPoolExecutor(CALLS) as pool:
            responses = list(pool.map(call, range(CALLS)))

    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 409}, [(r.status_code, r.text[:300]) for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert r.json()["type"].endswith("/conflict"), r.text
            # Changes are serialized: a 409 is a rule (already suspended, not suspended),
            # never two writers racing for the same sequence number.
            assert "at the same time" not in r.json()["detail"], r.text
    with Session(world.resources.engine) as session:
        stmt = select(ConsentEventRow.seq).where(ConsentEventRow.consent_id == consent_id)
        seqs = list(session.exec(stmt.order_by(col(ConsentEventRow.seq))).all())
    assert seqs == list(range(1, len(seqs) + 1)), "one event per sequence number, no gaps"
    assert len(seqs) > 1  # the calls did change the consent


def test_a_database_busy_past_the_timeout_is_503_with_retry_after_not_500(
    app: FastAPI, client: TestClient
) -> None:
    @app.get("/locked-for-test")
    def locked() -> None:
        raise OperationalError(
            "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")
        )

    @app.get("/broken-for-test")
    def broken() -> None:
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))

    response = client.get("/locked-for-test", headers={"X-Request-Id": "req-busy0001"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"] == "/problems/unavailable"
    assert "locked" not in response.text
    other = client.get("/broken-for-test", headers={"X-Request-Id": "req-broken01"})
    assert other.status_code == 500
    assert other.headers["x-request-id"] == "req-broken01"
