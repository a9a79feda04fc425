"""Signing in to the school console through its forms, as a browser without JavaScript would."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
from fastapi.testclient import TestClient
from httpx import Response

from tests.support.admin import PASSWORD, Admin, World

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: Response | str) -> str:
    html = page if isinstance(page, str) else page.text
    found = _CSRF.search(html)
    assert found is not None, "no csrf_token on the page"
    return found.group(1)


def console_sign_in(world: World, admin: Admin | None = None) -> TestClient:
    """Email, password and a fresh code; recovery codes acknowledged on a first sign-in."""
    who = admin or world.admin
    client = world.client
    step = pyotp.TOTP(who.totp_secret).timecode(world.now())
    if step <= who.last_step:  # a code is good once: use the next one
        world.clock.advance(timedelta(seconds=30))
    page = client.get("/school/sign-in")
    form = {"csrf_token": csrf_of(page), "email": who.email, "password": PASSWORD,
            "code": who.code(world.now()), "next": "/school"}  # fmt: skip
    who.last_step = pyotp.TOTP(who.totp_secret).timecode(world.now())
    answer = client.post("/school/sign-in", data=form, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    if answer.headers["location"] == "/school/sign-in/recovery-codes":
        codes = client.get("/school/sign-in/recovery-codes")
        assert codes.status_code == 200
        done = client.post(
            "/school/sign-in/recovery-codes",
            data={"csrf_token": csrf_of(codes)},
            follow_redirects=False,
        )
        assert done.headers["location"] == "/school"
    return client
