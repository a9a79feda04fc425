"""School-admin login over HTTP: password + TOTP, replay, lockout with the clock, expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from broker import security
from broker.admin.models import AdminLoginFailure, AdminSession
from broker.clock import FrozenClock
from broker.security import digest_secret
from tests.support.admin import PASSWORD, World, build_world, cheap_argon2


@pytest.fixture
def world(client: TestClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> World:
    cheap_argon2(monkeypatch)
    return build_world(client, clock)


def test_login_returns_a_token_for_my_school_stored_only_as_a_digest(world: World) -> None:
    response = world.login()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["school_id"] == world.school_id
    assert body["token"].startswith("mba_")
    assert body["expires_at"] == "2026-11-23T09:30:00Z"
    with Session(world.resources.engine) as session:
        stored = session.exec(select(AdminSession)).one()
    assert stored.token_hash == digest_secret(body["token"])
    listed = world.client.get(
        "/v1/admin/consents", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert listed.status_code == 200
    assert listed.json() == {"data": []}


@pytest.mark.parametrize(
    ("field", "value"),
    [("password", "Wr0ng!horse"), ("totp", "000000"), ("email", "nobody@hilltop.sch.uk")],
)
def test_wrong_password_code_or_email_is_one_and_the_same_401(
    world: World, field: str, value: str
) -> None:
    body = {"email": world.admin.email, "password": PASSWORD, "totp": world.admin.code(world.now())}
    if field == "totp":  # a code no step of the accepted window gives
        window = {world.admin.code(world.now() + timedelta(seconds=s)) for s in (-30, 0, 30)}
        value = next(c for c in ("000000", "111111", "222222", "333333") if c not in window)
    body[field] = value
    response = world.client.post("/v1/admin/login", json=body)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "wrong email, password or code"


def test_a_code_is_good_once(world: World) -> None:
    code = world.admin.code(world.now())
    assert world.login(code=code).status_code == 200
    assert world.login(code=code).status_code == 401
    world.clock.advance(timedelta(seconds=30))
    assert world.login().status_code == 200


def test_a_code_from_the_previous_step_is_accepted_but_not_older(world: World) -> None:
    previous = world.admin.code(world.now() - timedelta(seconds=30))
    older = world.admin.code(world.now() - timedelta(seconds=90))
    assert world.login(code=older).status_code == 401
    assert world.login(code=previous).status_code == 200


def test_five_failures_in_fifteen_minutes_lock_for_fifteen_minutes(world: World) -> None:
    for _ in range(5):
        world.clock.advance(timedelta(minutes=2))
        assert world.login(code="123456").status_code == 401
    locked = world.login()  # right password and code, still locked
    assert locked.status_code == 429
    assert locked.headers["content-type"] == "application/problem+json"
    assert locked.headers["retry-after"] == str(15 * 60)
    assert locked.json()["retry_after"] == 15 * 60
    world.clock.advance(timedelta(minutes=14, seconds=59))
    assert world.login().status_code == 429
    world.clock.advance(timedelta(seconds=1))
    assert world.login().status_code == 200
    with Session(world.resources.engine) as session:  # success forgets the failures
        assert session.exec(select(AdminLoginFailure)).all() == []


def test_failures_spread_over_more_than_fifteen_minutes_do_not_lock(world: World) -> None:
    for _ in range(5):
        assert world.login(code="123456").status_code == 401
        world.clock.advance(timedelta(minutes=4))
    assert world.login().status_code == 200


def test_lockout_is_per_email(world: World) -> None:
    for _ in range(5):
        assert world.login(code="123456").status_code == 401
    assert world.login().status_code == 429
    assert world.login(world.other_admin).status_code == 200


def test_unknown_emails_lock_too(world: World) -> None:
    body = {"email": "ghost@hilltop.sch.uk", "password": PASSWORD, "totp": "123456"}
    codes = [world.client.post("/v1/admin/login", json=body).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]


def test_a_token_expires_after_thirty_minutes(world: World) -> None:
    headers = world.headers()
    world.clock.advance(timedelta(minutes=30, microseconds=-1))
    assert world.client.get("/v1/admin/consents", headers=headers).status_code == 200
    world.clock.advance(timedelta(microseconds=1))
    response = world.client.get("/v1/admin/consents", headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_admin_endpoints_need_a_token(world: World) -> None:
    response = world.client.get("/v1/admin/consents")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        return super().verify(hash, password)


def test_an_unknown_email_costs_a_password_verification_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = CountingHasher()
    monkeypatch.setattr(security, "_hasher", hasher)
    body = {"email": "ghost@hilltop.sch.uk", "password": PASSWORD, "totp": "123456"}
    assert world.client.post("/v1/admin/login", json=body).status_code == 401
    assert hasher.verified == 1
