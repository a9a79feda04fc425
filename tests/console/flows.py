"""Steps a school admin takes in the console, by label and role as a person reads the page."""

from __future__ import annotations

import re
from dataclasses import dataclass

from playwright.sync_api import Page, expect

from tests.console.browser import Visitor
from tests.console.world import PASSWORD, Admin, Console


def at_path(page: Page, path: str) -> None:
    """The browser shows `path` (query string allowed)."""
    expect(page).to_have_url(re.compile(rf"^[^?#]*//[^/]+{re.escape(path)}(?:[?#].*)?$"))


@dataclass
class Enrolment:
    secret: str
    recovery_codes: list[str]


def fill_sign_in(page: Page, email: str, password: str = PASSWORD, code: str = "") -> None:
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Sign in").click()


def enrol(console: Console, page: Page, seen: Visitor, admin: Admin) -> Enrolment:
    """A new admin's first sign-in: password, then the authenticator app, then the codes."""
    page.goto("/school")
    at_path(page, "/school/sign-in")
    seen.visit("sign-in")
    fill_sign_in(page, admin.email)
    at_path(page, "/school/sign-in/authenticator")
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up your authenticator app")
    expect(page.get_by_role("img", name=re.compile("QR", re.IGNORECASE))).to_be_visible()
    secret = re.sub(r"\s+", "", page.locator("#totp-secret").inner_text())
    assert secret == admin.totp_secret, "the page shows another secret than the admin's"
    seen.visit("set up your authenticator app")
    page.get_by_label("Code from your authenticator app").fill(console.code(admin, secret))
    page.get_by_role("button", name="Continue").click()
    at_path(page, "/school/sign-in/recovery-codes")
    expect(page.get_by_role("heading", level=1)).to_have_text("Save your recovery codes")
    codes = [c.strip() for c in page.locator("#recovery-codes li").all_inner_texts()]
    assert len(codes) == 10, codes
    assert len(set(codes)) == 10, codes
    seen.visit("save your recovery codes")
    page.get_by_role("button", name="Continue to the console").click()
    at_path(page, "/school")
    return Enrolment(secret, codes)


def sign_in(console: Console, page: Page, admin: Admin) -> None:
    """An enrolled admin signs in with a code from the app."""
    page.goto("/school/sign-in")
    fill_sign_in(page, admin.email, code=console.code(admin))
    at_path(page, "/school")


def signed_out(page: Page) -> None:
    """The browser is at the sign-in page, with no way into the console."""
    at_path(page, "/school/sign-in")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
