"""Attacks on the console: forged forms, another school's ids, a session left open."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.browser import Visitor
from tests.console.conftest import new_context
from tests.console.flows import at_path, enrol, fill_sign_in, signed_out
from tests.console.test_journey import grant
from tests.console.world import BASIC, CONTACTS, Console, Tenant

pytestmark = pytest.mark.slow


def drop_csrf_token(page: Page) -> None:
    """Remove the hidden token from every form on the page, as a forged form would lack it."""
    page.locator("input[name=csrf_token]").evaluate_all("inputs => inputs.forEach(i => i.remove())")


def refused_as_expired(page: Page) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text("This form has expired")
    expect(page.locator("main")).to_contain_text("Nothing was changed")


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    console.upload(tenant, BASIC)
    partner_page = f"/school/partners/{tenant.partner_id}"
    enrol(console, page, visitor, tenant.admin)
    page.goto(partner_page)
    choices = page.get_by_role("group", name=f"Which data may {tenant.partner_name} read?")
    choices.get_by_label(BASIC, exact=True).check()
    page.get_by_role("button", name="Continue").click()
    drop_csrf_token(page)
    with page.expect_response(re.compile(r"/grant/confirm$")) as answer:
        page.get_by_role("button", name="Confirm and share").click()
    assert answer.value.status == 403
    refused_as_expired(page)
    visitor.visit("a grant without its token")
    assert console.partner_read(tenant, BASIC).status_code == 403, "the grant happened"

    # With the token of another session (or a guessed one), the same.
    page.goto(partner_page)
    choices.get_by_label(BASIC, exact=True).check()
    page.get_by_role("button", name="Continue").click()
    page.locator("main input[name=csrf_token]").evaluate(
        "i => { i.value = i.value.split('').reverse().join('') }"
    )
    page.get_by_role("button", name="Confirm and share").click()
    refused_as_expired(page)
    assert console.partner_read(tenant, BASIC).status_code == 403, "the grant happened"

    # A revocation without its token leaves the consent as it was.
    page.goto(partner_page)
    grant(page, visitor, tenant, (BASIC,))
    page.get_by_role("link", name="Revoke access").click()
    page.get_by_role("group", name="End date").get_by_label("Day").fill("1")
    page.get_by_role("group", name="End date").get_by_label("Month").fill("1")
    page.get_by_role("group", name="End date").get_by_label("Year").fill("2020")
    page.get_by_role("button", name="Continue").click()
    drop_csrf_token(page)
    page.get_by_role("button", name="Confirm revocation").click()
    refused_as_expired(page)
    read = console.partner_read(tenant, BASIC)
    assert read.status_code == 200
    assert "X-Consent-Ends-At" not in read.headers, "the revocation happened"

    # Signing out is a change too: a forged sign-out leaves the session alone.
    page.goto("/school")
    drop_csrf_token(page)
    page.get_by_role("button", name="Sign out").click()
    refused_as_expired(page)
    page.goto("/school")
    at_path(page, "/school")


def test_a_second_schools_admin_gets_404_for_the_first_schools_pages(
    console: Console, tenant: Tenant, browser: Browser, page: Page, visitor: Visitor
) -> None:
    enrol(console, page, visitor, tenant.admin)
    page.goto(f"/school/partners/{tenant.partner_id}")
    grant(page, visitor, tenant, (BASIC, CONTACTS))
    receipt = page.get_by_role("link", name="View receipt").get_attribute("href")
    assert receipt
    assert re.fullmatch(r"/school/consents/[^/]+/receipt", receipt), receipt
    assert page.request.get(receipt).status == 200
    page.goto("/school/admins")
    remove_me = page.get_by_role("link", name="Remove yourself").get_attribute("href")
    assert remove_me
    assert re.fullmatch(r"/school/admins/[^/]+/remove", remove_me), remove_me

    other = console.tenant()
    other_context = new_context(browser, console)
    try:
        intruder = other_context.new_page()
        seen = Visitor(intruder, visitor.name + "-intruder")
        enrol(console, intruder, seen, other.admin)
        for path in (receipt, receipt + ".json", remove_me):
            answer = intruder.goto(path)
            assert answer is not None
            assert answer.status == 404, f"{path}: {answer.status}"
        expect(intruder.get_by_role("heading", level=1)).to_be_visible()
        seen.visit("another school's receipt")
        # The partner is the same for every school; the first school's consent is not.
        intruder.goto(f"/school/partners/{tenant.partner_id}")
        expect(intruder.get_by_role("link", name="View receipt")).to_have_count(0)
        expect(intruder.get_by_role("link", name="Revoke access")).to_have_count(0)
        seen.visit("a partner another school granted")
        # Forms posted from the second school's session, naming the first school's things.
        token = intruder.locator("input[name=csrf_token]").first.get_attribute("value")
        assert token
        forged = intruder.request.post(remove_me, form={"csrf_token": token}, max_redirects=0)
        assert forged.status == 404, f"{remove_me}: {forged.status}"
        for path in (
            f"/school/partners/{tenant.partner_id}/revoke/confirm",
            f"/school/partners/{tenant.partner_id}/suspend",
        ):
            form: dict[str, str | float | bool] = {
                "csrf_token": token,
                "end_at": "2020-01-01T00:00:00+00:00",
                "reason": "x",
            }
            forged = intruder.request.post(path, form=form, max_redirects=0)
            assert forged.status >= 400, f"{path}: {forged.status} (the second school's consent)"
        seen.check_responses()
        assert not seen.problems, seen.problems
    finally:
        other_context.close()
    read = console.partner_read(tenant, BASIC)
    assert read.status_code in (200, 202)
    assert "X-Consent-Ends-At" not in read.headers, "another school revoked this consent"
    page.goto(f"/school/partners/{tenant.partner_id}")
    expect(page.locator(".govuk-summary-list")).to_contain_text("Active")
    page.goto("/school/admins")  # the first school's admin was not removed
    expect(page.get_by_role("link", name="Remove yourself")).to_be_visible()


def test_a_session_idle_for_30_minutes_goes_back_to_sign_in(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    enrol(console, page, visitor, tenant.admin)
    console.clock.advance(timedelta(minutes=29, seconds=59))
    page.goto("/school/access-log")
    at_path(page, "/school/access-log")  # a request just before the limit keeps it alive
    console.clock.advance(timedelta(minutes=31))
    page.goto("/school/decisions")
    signed_out(page)
    expect(page).to_have_url(re.compile(r"next=%2Fschool%2Fdecisions"))
    visitor.visit("signed out after 31 idle minutes")
    fill_sign_in(page, tenant.admin.email, code=console.code(tenant.admin))
    at_path(page, "/school/decisions")  # back where the admin was going


def test_a_session_ends_12_hours_after_sign_in_however_busy(
    console: Console, tenant: Tenant, page: Page, visitor: Visitor
) -> None:
    enrol(console, page, visitor, tenant.admin)
    signed_in_at = console.clock.now()
    step = timedelta(minutes=25)
    while console.clock.now() + step < signed_in_at + timedelta(hours=12):
        console.clock.advance(step)
        page.goto("/school")
        at_path(page, "/school")
    console.clock.set(signed_in_at + timedelta(hours=12))
    page.goto("/school")
    signed_out(page)
