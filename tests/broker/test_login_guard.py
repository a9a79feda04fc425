"""Login under floods: bounded hashes, rate limits, an atomic lockout, and sign-out."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from typing import Literal

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from broker import security
from broker.admin.guard import hash_gate
from broker.admin.models import AdminLoginFailure, AdminSession
from broker.clock import FrozenClock
from broker.settings import Settings
from consent.models import AuditEvent
from tests.support.admin import PASSWORD, World, build_world, cheap_argon2


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self._lock:
            self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
def settings(settings_on_each_database: Settings) -> Settings:
    """The lockout and consent serialization are per database: SQLite's BEGIN IMMEDIATE and
    PostgreSQL's locks are both under test."""
    return settings_on_each_database


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    return build_world(client, clock)


def _failures(world: World, email: str) -> int:
    with Session(world.resources.engine) as session:
        return len(
            session.exec(select(AdminLoginFailure).where(AdminLoginFailure.email == email)).all()
        )


def test_a_burst_of_sixty_wrong_passwords_gets_only_the_limit_evaluated(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = CountingHasher()
    monkeypatch.setattr(security, "_hasher", hasher)
    limiter = world.runtime.login_limiter
    assert limiter is not None
    monkeypatch.setattr(limiter, "per_account", 1000)  # the lockout is under test here
    body = {"email": world.admin.email, "password": "Wr0ng!horse", "totp": "123456"}
    start = threading.Barrier(60)

    def attempt(_: int) -> int:
        start.wait()
        return int(world.client.post("/v1/admin/login", json=body).status_code)

    with ThreadPoolExecutor(60) as pool:
        codes = Counter(pool.map(attempt, range(60)))
    assert codes == {401: 5, 429: 55}
    assert hasher.verified == 5
    assert _failures(world, world.admin.email) == 5


def test_an_attempt_that_crashes_still_counts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(password: str, stored_hash: str) -> bool:
        raise RuntimeError("database is locked")

    monkeypatch.setattr("broker.admin.auth.verify_password", broken)
    assert world.login().status_code == 500
    assert _failures(world, world.admin.email) == 1


def test_a_success_clears_the_reservations(world: World) -> None:
    assert world.login(code="000000").status_code in (401, 200)
    assert world.login().status_code == 200
    assert _failures(world, world.admin.email) == 0


def test_saturated_hash_slots_answer_503_with_retry_after_and_readyz_shows_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(world.runtime.admin_settings, "admin_login_hash_wait_seconds", 0.0)
    gate = hash_gate()
    with ExitStack() as held:
        for _ in range(gate.slots):
            held.enter_context(gate.slot(0))
        refused = world.login()
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        ready = world.client.get("/readyz").json()
        assert ready["login"] == {"hashes_in_flight": gate.slots, "hash_slots": gate.slots}
        metrics = world.client.get("/metrics").text
        assert f"misbroker_login_hashes_in_flight {float(gate.slots)}" in metrics
    assert _failures(world, world.admin.email) == 0  # refused before it was counted
    assert world.login().status_code == 200
    assert world.client.get("/readyz").json()["login"]["hashes_in_flight"] == 0


def test_logins_are_rate_limited_per_ip(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = world.runtime.login_limiter
    assert limiter is not None
    monkeypatch.setattr(limiter, "per_ip", 3)
    codes = [
        world.client.post(
            "/v1/admin/login",
            json={"email": f"ghost{i}@hilltop.sch.uk", "password": PASSWORD, "totp": "123456"},
        )
        for i in range(4)
    ]
    assert [r.status_code for r in codes] == [401, 401, 401, 429]
    assert int(codes[-1].headers["retry-after"]) >= 1
    world.clock.advance(timedelta(minutes=1))
    assert world.login().status_code == 200


def test_logins_are_rate_limited_per_account(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = world.runtime.login_limiter
    assert limiter is not None
    monkeypatch.setattr(limiter, "per_account", 2)
    assert [world.login(code="000000").status_code for _ in range(2)] == [401, 401]
    assert world.login().status_code == 429  # even the right code: the window is spent
    assert world.login(world.other_admin).status_code == 200


def test_logout_revokes_the_token(world: World) -> None:
    headers = world.headers()
    assert world.client.get("/v1/admin/consents", headers=headers).status_code == 200
    assert world.client.post("/v1/admin/logout", headers=headers).status_code == 204
    assert world.client.get("/v1/admin/consents", headers=headers).status_code == 401
    assert world.client.post("/v1/admin/logout", headers=headers).status_code == 401
    with Session(world.resources.engine) as session:
        assert session.exec(select(AdminSession)).all() == []


def test_logout_needs_an_admin_token(world: World) -> None:
    assert world.client.post("/v1/admin/logout").status_code == 401


def _refusal_rows(world: World) -> list[AuditEvent]:
    with Session(world.resources.engine) as session:
        stmt = select(AuditEvent).where(AuditEvent.action == "admin_api.refused")
        return list(session.exec(stmt).all())


def test_eight_hundred_anonymous_writes_leave_a_bounded_aggregate(world: World) -> None:
    body = {"partner_id": world.partner_id, "areas": ["students.basic"]}
    codes = Counter(
        world.client.post("/v1/admin/consents", json=body).status_code for _ in range(800)
    )
    assert codes == {401: 800}
    rows = _refusal_rows(world)
    # One minute, one actor, one endpoint: the 1st, 10th and 100th refusals are written.
    assert [row.detail["count_this_minute"] for row in rows] == [1, 10, 100]
    assert {row.actor for row in rows} == {"anonymous"}
    world.clock.advance(timedelta(minutes=1))
    assert world.client.post("/v1/admin/consents", json=body).status_code == 401
    assert len(_refusal_rows(world)) == 4
