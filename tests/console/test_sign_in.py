"""Sign-in: enrolment of a new admin's authenticator, errors, lockout, sign-out."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.console.browser import Visitor
from tests.console.flows import at_path, enrol, fill_sign_in, sign_in, signed_out
from tests.console.world import Console, Tenant

pytestmark = pytest.mark.slow


def test_the_root_and_the_console_send_a_stranger_to_sign_in(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    page.goto("/")
    signed_out(page)
    for label in ("Email address", "Password", "Code from your authenticator app"):
        expect(page.get_by_label(label)).to_be_visible()
    visitor.visit("sign-in")
    page.goto(f"/school/partners/{tenant.partner_id}")
    signed_out(page)


def test_a_wrong_password_is_summarised_and_linked_to_its_field(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    page.goto("/school/sign-in")
    fill_sign_in(page, tenant.admin.email, password="Wr0ng!horse", code="123456")
    summary = page.locator(".govuk-error-summary")
    expect(summary.get_by_role("heading")).to_have_text("There is a problem")
    links = summary.get_by_role("link").all()
    assert links, "the error summary links to no field"
    for link in links:
        target = (link.get_attribute("href") or "").removeprefix("#")
        assert target, "an error summary link with no target"
        assert page.locator(f"[id='{target}']").count() == 1, f"#{target} is no field"
    expect(page.get_by_label("Email address")).to_have_value(tenant.admin.email)
    expect(page.get_by_label("Password")).to_have_value("")  # never echoed back
    visitor.visit("sign-in with an error")


def test_first_sign_in_enrols_the_authenticator_then_a_code_signs_in(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    enrolment = enrol(console, page, visitor, tenant.admin)
    expect(page.get_by_role("heading", level=1)).to_have_text(tenant.school_name)
    visitor.visit("home")
    page.get_by_role("button", name="Sign out").click()
    signed_out(page)
    visitor.visit("signed out")
    sign_in(console, page, tenant.admin)
    visitor.visit("home after a second sign-in")
    page.get_by_role("button", name="Sign out").click()
    signed_out(page)
    # A recovery code stands in for the app once, and only once.
    fill_sign_in(page, tenant.admin.email, code=enrolment.recovery_codes[0])
    at_path(page, "/school")
    page.get_by_role("button", name="Sign out").click()
    fill_sign_in(page, tenant.admin.email, code=enrolment.recovery_codes[0])
    expect(page.locator(".govuk-error-summary")).to_be_visible()
    visitor.visit("a used recovery code")


def test_five_failures_lock_the_account_as_the_api_does(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    page.goto("/school/sign-in")
    for _ in range(5):
        fill_sign_in(page, tenant.admin.email, password="Wr0ng!horse")
        expect(page.locator(".govuk-error-summary")).to_be_visible()
    fill_sign_in(page, tenant.admin.email, code=console.code(tenant.admin))
    expect(page.locator(".govuk-error-summary")).to_contain_text("15 minute")
    at_path(page, "/school/sign-in")
    visitor.visit("locked")
