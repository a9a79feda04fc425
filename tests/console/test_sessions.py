"""Console sessions and sign-in rules, exactly, with a frozen clock: timeouts, cookie flags,
enrolment, recovery codes, CSRF on the sign-in form, security headers."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.support.admin import PASSWORD, World
from tests.support.console import csrf_of, sign_in


def post_sign_in(world: World, code: str, *, email: str | None = None) -> Response:
    page = world.client.get("/school/sign-in")
    form = {"csrf_token": csrf_of(page), "email": email or world.admin.email,
            "password": PASSWORD, "code": code}  # fmt: skip
    answer: Response = world.client.post("/school/sign-in", data=form, follow_redirects=False)
    return answer


def test_idle_for_30_minutes_sends_the_browser_back_to_sign_in(world: World) -> None:
    sign_in(world)
    world.clock.advance(timedelta(minutes=29, seconds=59))
    assert world.client.get("/school", follow_redirects=False).status_code == 200
    world.clock.advance(timedelta(minutes=30))
    gone = world.client.get("/school/agent", follow_redirects=False)
    assert gone.status_code == 303
    assert gone.headers["location"] == "/school/sign-in?next=%2Fschool%2Fagent"


def test_a_busy_session_still_ends_12_hours_after_sign_in(world: World) -> None:
    sign_in(world)
    for _ in range(12 * 3 - 1):  # a click every 20 minutes keeps it from going idle ...
        world.clock.advance(timedelta(minutes=20))
        assert world.client.get("/school", follow_redirects=False).status_code == 200
    world.clock.advance(timedelta(minutes=20))  # ... until 12 hours have passed
    assert world.client.get("/school", follow_redirects=False).status_code == 303


def test_the_cookie_is_httponly_and_samesite(world: World) -> None:
    answer = post_sign_in(world, world.admin.code(world.now()))
    cookie = answer.headers["set-cookie"]
    assert "misbroker_console=mbc_" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/school" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind TLS the flag is set


def test_the_cookie_is_secure_behind_tls(client: TestClient, world: World) -> None:
    tls = TestClient(client.app, base_url="https://testserver")
    page = tls.get("/school/sign-in")
    form = {"csrf_token": csrf_of(page), "email": world.admin.email, "password": PASSWORD,
            "code": world.admin.code(world.now())}  # fmt: skip
    answer = tls.post("/school/sign-in", data=form, follow_redirects=False)
    assert "Secure" in answer.headers["set-cookie"]


def test_first_sign_in_without_a_code_shows_the_qr_code_and_the_secret(world: World) -> None:
    answer = post_sign_in(world, "")
    assert answer.headers["location"] == "/school/sign-in/authenticator"
    page = world.client.get("/school/sign-in/authenticator")
    assert world.admin.totp_secret in page.text
    assert 'src="data:image/svg+xml' in page.text
    assert world.client.get("/school", follow_redirects=False).status_code == 303  # not in yet
    wrong = world.client.post(
        "/school/sign-in/authenticator", data={"csrf_token": csrf_of(page), "code": "000000"}
    )
    assert wrong.status_code == 422
    done = world.client.post(
        "/school/sign-in/authenticator",
        data={"csrf_token": csrf_of(page), "code": world.admin.code(world.now())},
        follow_redirects=False,
    )
    assert done.headers["location"] == "/school/sign-in/recovery-codes"
    codes_page = world.client.get("/school/sign-in/recovery-codes")
    codes = re.findall(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>", codes_page.text)
    assert len(set(codes)) == 10
    world.client.post("/school/sign-in/recovery-codes", data={"csrf_token": csrf_of(codes_page)})
    assert world.client.get("/school", follow_redirects=False).status_code == 200


def test_once_enrolled_a_code_is_required(world: World) -> None:
    sign_in(world)
    world.client.cookies.clear()
    world.clock.advance(timedelta(seconds=30))
    answer = post_sign_in(world, "")
    assert answer.status_code == 401


def test_a_recovery_code_signs_in_once(world: World) -> None:
    answer = post_sign_in(world, world.admin.code(world.now()))
    assert answer.headers["location"] == "/school/sign-in/recovery-codes"
    codes_page = world.client.get("/school/sign-in/recovery-codes")
    code = re.findall(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>", codes_page.text)[3]
    world.client.post("/school/sign-in/recovery-codes", data={"csrf_token": csrf_of(codes_page)})
    world.client.cookies.clear()
    first = post_sign_in(world, code.upper())
    assert first.headers["location"] == "/school"
    world.client.cookies.clear()
    again = post_sign_in(world, code)
    assert again.status_code == 401


def test_a_replayed_code_is_refused(world: World) -> None:
    code = world.admin.code(world.now())
    assert post_sign_in(world, code).status_code == 303
    world.client.cookies.clear()
    assert post_sign_in(world, code).status_code == 401
    assert pyotp.TOTP(world.admin.totp_secret).verify(code, for_time=world.now())


def test_the_sign_in_form_needs_its_csrf_token(world: World) -> None:
    world.client.get("/school/sign-in")
    answer = world.client.post(
        "/school/sign-in",
        data={"email": world.admin.email, "password": PASSWORD,
              "code": world.admin.code(world.now())},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 403
    assert "misbroker_console" not in answer.headers.get("set-cookie", "")


def test_sign_out_ends_the_session(world: World) -> None:
    sign_in(world)
    home = world.client.get("/school")
    out = world.client.post(
        "/school/sign-out", data={"csrf_token": csrf_of(home)}, follow_redirects=False
    )
    assert out.headers["location"] == "/school/sign-in?signed-out=1"
    assert world.client.get("/school", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("path", ["/school/sign-in", "/school"])
def test_every_page_carries_the_security_headers(world: World, path: str) -> None:
    sign_in(world)
    page = world.client.get(path)
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert re.search(r"script-src 'self' 'nonce-[^']+'", csp)
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_the_root_redirects_to_the_console(world: World) -> None:
    answer = world.client.get("/", follow_redirects=False)
    assert answer.status_code in (302, 303, 307)
    assert answer.headers["location"].endswith("/school")


def test_an_unexpected_failure_is_a_page_with_the_headers_and_changes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(world)
    from broker.admin.consents import SchoolConsents

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(SchoolConsents, "overview", broken)
    page = world.client.get("/school")
    assert page.status_code == 500
    assert "Sorry, there is a problem with the service" in page.text
    assert page.headers["x-request-id"] in page.text  # the reference to quote
    assert "the disk is on fire" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_sign_in_has_the_api_logins_per_account_limit(world: World) -> None:
    limit = world.runtime.admin_settings.admin_login_per_account_per_minute
    for _ in range(limit):
        answer = post_sign_in(world, "000000")
        assert answer.status_code in (401, 429)  # 429 once the lockout (5) has set in
    refused = post_sign_in(world, world.admin.code(world.now()))
    assert refused.status_code == 429
    assert "There is a problem" in refused.text
    assert "too many sign-in attempts" in refused.text.lower()
    assert "misbroker_console" not in refused.headers.get("set-cookie", "")
