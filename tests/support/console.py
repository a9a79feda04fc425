"""Signing in to the console with FastAPI's TestClient, as a browser without JavaScript would."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pyotp
from httpx import Response

from tests.support.admin import PASSWORD, Admin, World

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: Response | str) -> str:
    """The CSRF token of the page's last form (the sign-out form in the header comes first)."""
    tokens = _CSRF.findall(page if isinstance(page, str) else page.text)
    assert tokens, "the page has no form with a CSRF token"
    return str(tokens[-1])


def code_for(world: World, admin: Admin, secret: str | None = None) -> str:
    """A TOTP code not used before: a code is good once, so wait for the next step if need be."""
    totp = pyotp.TOTP(secret or admin.totp_secret)
    step = totp.timecode(world.now())
    if step <= admin.last_step:
        world.clock.advance(timedelta(seconds=30))
        step += 1
    admin.last_step = step
    return str(totp.at(world.now()))


def sign_in(world: World, admin: Admin | None = None) -> None:
    """Password and code on the sign-in page; a CLI-made admin then sees recovery codes once."""
    who = admin or world.admin
    client = world.client
    client.cookies.clear()
    page = client.get("/school/sign-in")
    form = {
        "csrf_token": csrf_of(page.text),
        "email": who.email,
        "password": PASSWORD,
        "code": code_for(world, who),
        "next": "/school",
    }
    response = client.post("/school/sign-in", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    if response.headers["location"] == "/school/sign-in/recovery-codes":
        codes = client.get("/school/sign-in/recovery-codes")
        done = post(world, "/school/sign-in/recovery-codes", {"csrf_token": csrf_of(codes.text)})
        assert done.headers["location"] == "/school", done.text
    else:
        assert response.headers["location"] == "/school"


def post(world: World, path: str, data: dict[str, Any]) -> Response:
    response: Response = world.client.post(path, data=data, follow_redirects=False)
    return response


def submit(world: World, page_path: str, action: str, data: dict[str, Any]) -> Response:
    """GET a page, then POST its form with the CSRF token the page carries."""
    page = world.client.get(page_path)
    assert page.status_code == 200, page.text
    return post(world, action, {"csrf_token": csrf_of(page.text), **data})
