"""Every form works with JavaScript turned off: sign in, enrol, grant, change, revoke.

axe-core needs JavaScript, so these pages are checked by the other tests; here the visitor
keeps to headers, forms and screenshots.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.browser import PHONE, Visitor
from tests.console.conftest import new_context, slug_of
from tests.console.flows import at_path, enrol
from tests.console.test_journey import banner, grant, summary_value
from tests.console.world import BASIC, CONTACTS, Console, Tenant

pytestmark = pytest.mark.slow


@pytest.fixture
def plain_page(browser: Browser, console: Console) -> Iterator[Page]:
    context = new_context(browser, console, javascript=False)
    yield context.new_page()
    context.close()


@pytest.fixture
def plain_visitor(plain_page: Page, request: pytest.FixtureRequest) -> Iterator[Visitor]:
    seen = Visitor(plain_page, slug_of(request), axe=False)
    yield seen
    seen.check_responses()
    assert not seen.problems, "\n".join(seen.problems)


def test_sign_in_and_grant_without_javascript(
    console: Console, tenant: Tenant, plain_page: Page, plain_visitor: Visitor
) -> None:
    page, seen = plain_page, plain_visitor
    console.upload(tenant, BASIC, CONTACTS)
    enrol(console, page, seen, tenant.admin)
    seen.visit("home")
    page.set_viewport_size(PHONE)  # the menu must not hide behind a button that needs a script
    expect(page.get_by_role("link", name="Access log", exact=True)).to_be_visible()
    page.get_by_role("table").get_by_role("link", name=tenant.partner_name, exact=True).click()
    at_path(page, f"/school/partners/{tenant.partner_id}")
    grant(page, seen, tenant, (BASIC, CONTACTS))
    expect(summary_value(page, "Status")).to_contain_text("Active")
    seen.visit("granted")
    assert console.partner_read(tenant, CONTACTS).status_code == 200

    # Narrow to one area: the removed one follows the revocation rules.
    page.get_by_role("link", name="Change data areas").click()
    page.get_by_label(CONTACTS, exact=True).uncheck()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your changes")
    seen.visit("check your changes")
    page.get_by_role("button", name="Confirm changes").click()
    expect(banner(page)).to_be_visible()
    seen.visit("areas changed")
    assert console.partner_read(tenant, BASIC).status_code == 200
    ending = console.partner_read(tenant, CONTACTS)
    assert ending.status_code == 200, "a removed area keeps its grace"
    assert "X-Consent-Ends-At" in ending.headers
