"""Admins of my school (invite by a one-time link, remove, never the last, change my
password) and the agent's page (freshness, refresh now), in the browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.browser import Visitor
from tests.console.conftest import new_context
from tests.console.flows import at_path, enrol, fill_sign_in, signed_out
from tests.console.test_journey import banner
from tests.console.world import BASIC, Admin, Console, Tenant

pytestmark = pytest.mark.slow

NEW_PASSWORD = "Batt3ry-staple!"


def test_an_admin_invites_a_colleague_who_enrols_then_removes_them(
    console: Console, tenant: Tenant, browser: Browser, page: Page, visitor: Visitor
) -> None:
    enrol(console, page, visitor, tenant.admin)
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Admins").click()
    at_path(page, "/school/admins")
    visitor.visit("admins")
    page.get_by_role("button", name="Add an admin").click()
    visitor.visit("add an admin")
    colleague = f"deputy.head.{tenant.school_id}@example.org"
    page.get_by_label("What is the new admin's email address?").fill(colleague)
    page.get_by_role("button", name="Create enrolment link").click()
    link = page.locator("#enrolment-link").inner_text().strip()
    assert re.fullmatch(r"http://[^/]+/school/enrol/\S+", link), link
    visitor.visit("enrolment link")
    page.goto("/school/admins")
    expect(page.get_by_role("row").filter(has_text=colleague)).to_be_visible()
    assert link.rsplit("/", 1)[1] not in page.content(), "the link is shown again"

    context = new_context(browser, console)
    try:
        theirs = context.new_page()
        seen = Visitor(theirs, visitor.name + "-colleague")
        theirs.goto(link)
        expect(theirs.get_by_role("heading", level=1)).to_have_text("Create your password")
        seen.visit("create your password")
        theirs.get_by_label("Create a password").fill("password")
        theirs.get_by_label("Confirm password").fill("password")
        theirs.get_by_role("button", name="Continue").click()
        expect(theirs.locator(".govuk-error-summary")).to_be_visible()
        seen.visit("a weak password")
        theirs.get_by_label("Create a password").fill(NEW_PASSWORD)
        theirs.get_by_label("Confirm password").fill(NEW_PASSWORD)
        theirs.get_by_role("button", name="Continue").click()
        at_path(theirs, "/school/sign-in/authenticator")
        secret = re.sub(r"\s+", "", theirs.locator("#totp-secret").inner_text())
        deputy = Admin(tenant.school_id, colleague, secret)
        theirs.get_by_label("Code from your authenticator app").fill(console.code(deputy))
        theirs.get_by_role("button", name="Continue").click()
        at_path(theirs, "/school/sign-in/recovery-codes")
        theirs.get_by_role("button", name="Continue to the console").click()
        at_path(theirs, "/school")
        expect(theirs.get_by_role("heading", level=1)).to_have_text(tenant.school_name)
        again = theirs.request.get(link, max_redirects=0)
        assert again.status >= 400, f"the link worked twice: {again.status}"

        page.goto("/school/admins")
        row = page.get_by_role("row").filter(has_text=colleague)
        expect(row).to_contain_text("Set up")
        row.get_by_role("link", name=re.compile("Remove")).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(colleague)
        visitor.visit("remove an admin")
        page.get_by_role("button", name="Yes, remove this admin").click()
        at_path(page, "/school/admins")
        expect(page.get_by_role("row").filter(has_text=colleague)).to_have_count(0)
        theirs.goto("/school")
        signed_out(theirs)  # removed: signed out at once
        seen.check_responses()
        assert not seen.problems, "\n".join(seen.problems)
    finally:
        context.close()

    # The last admin cannot remove themselves.
    page.get_by_role("link", name="Remove yourself").click()
    page.get_by_role("button", name="Yes, remove myself").click()
    expect(page.locator(".govuk-error-summary")).to_be_visible()
    visitor.visit("removing the last admin")
    page.goto("/school/admins")
    at_path(page, "/school/admins")


def test_an_admin_changes_their_password_under_the_policy(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    enrol(console, page, visitor, tenant.admin)
    page.goto("/school/admins")
    page.get_by_role("link", name="Change your password").click()
    visitor.visit("change your password")
    page.get_by_label("Current password").fill("Corr3ct!horse")
    page.get_by_label("New password", exact=True).fill("short")
    page.get_by_label("Confirm new password").fill("short")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator(".govuk-error-summary")).to_be_visible()
    visitor.visit("a password the policy refuses")
    page.get_by_label("Current password").fill("Corr3ct!horse")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirm new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(banner(page)).to_be_visible()
    visitor.visit("password changed")
    page.get_by_role("button", name="Sign out").click()
    fill_sign_in(page, tenant.admin.email, code=console.code(tenant.admin))
    expect(page.locator(".govuk-error-summary")).to_be_visible()  # the old one no longer
    fill_sign_in(page, tenant.admin.email, NEW_PASSWORD, console.code(tenant.admin))
    at_path(page, "/school")


def test_the_agent_page_shows_freshness_and_refreshes_chosen_areas(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    console.upload(tenant, BASIC)
    enrol(console, page, visitor, tenant.admin)
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Agent and data").click()
    at_path(page, "/school/agent")
    expect(page.get_by_role("heading", level=1)).to_have_text("Agent and data")
    expect(page.get_by_role("row").filter(has_text=BASIC).first).to_be_visible()
    visitor.visit("agent and data")
    page.get_by_role("button", name="Refresh selected areas").click()
    expect(page.locator(".govuk-error-summary")).to_be_visible()  # nothing chosen
    visitor.visit("refresh with nothing chosen")
    choices = page.get_by_role("group", name="Which areas should the agent extract now?")
    choices.get_by_label(BASIC, exact=True).check()
    page.get_by_role("button", name="Refresh selected areas").click()
    expect(banner(page)).to_be_visible()
    visitor.visit("refresh queued")
    # The Writes page, reached from the navigation, passes the same checks (axe included).
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Writes").click()
    at_path(page, "/school/writes")
    expect(page.get_by_role("heading", level=1)).to_have_text("Writes")
    visitor.visit("writes")
    # Restricted pupils: a form error, a restriction, then lifting it, checked the same way.
    nav = page.get_by_role("navigation", name="Menu")
    nav.get_by_role("link", name="Restricted pupils").click()
    at_path(page, "/school/restrictions")
    visitor.visit("restricted pupils")
    page.get_by_role("button", name="Restrict pupil").click()
    expect(page.locator(".govuk-error-summary")).to_be_visible()
    visitor.visit("restrict without an id")
    page.get_by_label("Pupil id").fill("stu-00042")
    page.get_by_label("Why must this pupil's data not be shared?").fill("Safeguarding")
    page.get_by_role("button", name="Restrict pupil").click()
    expect(page.get_by_role("row").filter(has_text="stu-00042")).to_be_visible()
    visitor.visit("a pupil restricted")
    page.get_by_role("button", name="Lift the restriction on stu-00042").click()
    expect(page.get_by_text("No pupil is restricted.")).to_be_visible()
