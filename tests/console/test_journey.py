"""A school admin's whole journey in a real browser, checked against the partner and admin APIs.

Enrol the authenticator; grant two areas, and a partner reads over the API; suspend and
resume; revoke with a date in the past and see the grace's end instant before confirming;
export the access log as CSV (the same bytes as the admin API's CSV for the same filter);
ask who could read what at a past moment; sign out.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from broker.clock import rfc3339
from tests.console.browser import Visitor
from tests.console.flows import at_path, enrol, signed_out
from tests.console.world import BASIC, CONTACTS, DEMOGRAPHICS, Console, Tenant

pytestmark = pytest.mark.slow

GRACE = timedelta(hours=72)


def fill_date(group: Locator, at: datetime) -> None:
    group.get_by_label("Day").fill(str(at.day))
    group.get_by_label("Month").fill(str(at.month))
    group.get_by_label("Year").fill(str(at.year))


def banner(page: Page) -> Locator:
    return page.locator(".govuk-notification-banner--success")


def summary_value(page: Page, key: str) -> Locator:
    row = page.locator(".govuk-summary-list__row").filter(
        has=page.locator(".govuk-summary-list__key", has_text=re.compile(rf"^\s*{key}\s*$"))
    )
    return row.locator(".govuk-summary-list__value")


def decision_row(page: Page, tenant: Tenant, area: str) -> Locator:
    """The row for the area in the partner's table of decisions."""
    table = page.get_by_role("table", name=tenant.partner_name, exact=True)
    return table.get_by_role("row").filter(has=page.get_by_role("rowheader", name=area, exact=True))


def grant(page: Page, seen: Visitor, tenant: Tenant, areas: tuple[str, ...]) -> None:
    choices = page.get_by_role("group", name=f"Which data may {tenant.partner_name} read?")
    for area in areas:
        choices.get_by_label(area, exact=True).check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check what you will share")
    for area in areas:
        expect(page.locator(".govuk-summary-list__key", has_text=area)).to_be_visible()
    expect(page.locator(".govuk-summary-list__key", has_text=DEMOGRAPHICS)).to_have_count(0)
    seen.visit("check what you will share")
    page.get_by_role("button", name="Confirm and share").click()
    at_path(page, f"/school/partners/{tenant.partner_id}")
    expect(banner(page)).to_be_visible()


def test_a_school_admin_grants_suspends_revokes_audits_and_signs_out(
    console: Console, tenant: Tenant, context: BrowserContext, page: Page, visitor: Visitor
) -> None:
    console.upload(tenant, BASIC, CONTACTS)
    partner_page = f"/school/partners/{tenant.partner_id}"

    # Enrol, then home: the partner waits for a decision.
    enrol(console, page, visitor, tenant.admin)
    expect(page.get_by_role("heading", level=1)).to_have_text(tenant.school_name)
    attention = page.get_by_role("heading", name="Needs your attention")
    expect(attention).to_be_visible()
    waiting = f"{tenant.partner_name} is waiting for your decision"
    expect(page.get_by_role("listitem").filter(has_text=waiting)).to_be_visible()
    nav = page.get_by_role("navigation", name="Menu")
    labels = ("Home", "Access log", "Decisions", "Agent and data", "Writes", "Restricted pupils")
    for label in (*labels, "Admins"):
        expect(nav.get_by_role("link", name=label, exact=True)).to_be_visible()
    cookies = [c for c in context.cookies() if c.get("httpOnly")]
    assert cookies, "no HttpOnly cookie holds the session"
    assert all(c.get("sameSite") in ("Lax", "Strict") for c in cookies), cookies
    visitor.visit("home with a partner waiting")

    # The partner's page: each area expanded to fields, with reasons; sensitive marked.
    page.get_by_role("table").get_by_role("link", name=tenant.partner_name, exact=True).click()
    at_path(page, partner_page)
    expect(page.get_by_role("heading", level=1)).to_have_text(tenant.partner_name)
    requests = page.get_by_role("table").filter(has_text="asks for")
    expect(requests.get_by_role("row").filter(has_text=DEMOGRAPHICS)).to_contain_text("Sensitive")
    expect(requests.get_by_role("row").filter(has_text=DEMOGRAPHICS)).to_contain_text(
        "Pupil premium"
    )
    expect(requests.get_by_role("row").filter(has_text=BASIC)).to_contain_text("upn")
    assert console.partner_read(tenant, BASIC).status_code == 403  # nothing granted yet
    visitor.visit("partner without consent")

    # Grant two areas: the partner reads one, and is still refused the third.
    granted_at = console.clock.now()
    grant(page, visitor, tenant, (BASIC, CONTACTS))
    expect(summary_value(page, "Status")).to_contain_text("Active")
    visitor.visit("partner granted")
    read = console.partner_read(tenant, BASIC)
    assert read.status_code == 200, read.text
    assert read.json()["data"], "the granted area reads empty"
    assert console.partner_read(tenant, DEMOGRAPHICS).status_code == 403

    # Suspend: refused at once.  Resume: allowed again.
    suspended_at = console.clock.advance(timedelta(minutes=10))
    page.get_by_role("link", name="Suspend access").click()
    at_path(page, f"{partner_page}/suspend")
    visitor.visit("suspend")
    page.get_by_label("Reason").fill("A partner laptop was stolen")
    page.get_by_role("button", name="Suspend access").click()
    at_path(page, partner_page)
    expect(summary_value(page, "Status")).to_contain_text("Suspended")
    visitor.visit("partner suspended")
    assert console.partner_read(tenant, BASIC).status_code == 403
    console.clock.advance(timedelta(minutes=10))
    page.get_by_role("button", name="Resume access").click()
    at_path(page, partner_page)
    expect(summary_value(page, "Status")).to_contain_text("Active")
    assert console.partner_read(tenant, BASIC).status_code == 200

    # Revoke with yesterday's date: the page states now + grace before anything changes.
    revoked_at = console.clock.advance(timedelta(minutes=10))
    page.get_by_role("link", name="Revoke access").click()
    at_path(page, f"{partner_page}/revoke")
    visitor.visit("revoke")
    fill_date(page.get_by_role("group", name="End date"), revoked_at - timedelta(days=1))
    page.get_by_label("Time").fill("09:00")
    page.get_by_label("Reason (optional)").fill("Our contract ended")
    page.get_by_role("button", name="Continue").click()
    ends_at = rfc3339(revoked_at + GRACE)
    expect(page.locator("#ends-at")).to_have_attribute("data-instant", ends_at)
    expect(page.locator("#ends-at")).to_contain_text(f"{(revoked_at + GRACE):%H:%M}")
    expect(page.locator("#ends-at")).to_contain_text(str((revoked_at + GRACE).year))
    visitor.visit("check when access will end")
    assert console.partner_read(tenant, BASIC).headers.get("X-Consent-Ends-At") is None
    page.get_by_role("button", name="Confirm revocation").click()
    at_path(page, partner_page)
    expect(banner(page)).to_be_visible()
    expect(summary_value(page, "Access ends")).to_contain_text(ends_at)
    read = console.partner_read(tenant, BASIC)
    assert read.status_code == 200, "the grace lets the partner finish"
    assert read.headers["X-Consent-Ends-At"] == ends_at
    history = page.get_by_role("table").filter(has_text="History")
    for event in ("Granted", "Suspended", "Resumed", "Revoked"):
        expect(history.get_by_role("row").filter(has_text=event).first).to_be_visible()
    expect(history).to_contain_text("A partner laptop was stolen")
    visitor.visit("partner revoked with grace")
    page.get_by_role("link", name="View receipt").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.locator("main")).to_contain_text(tenant.partner_name)
    visitor.visit("receipt")

    # The access log: the chain verifies; the CSV is the admin API's CSV, byte for byte.
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Access log").click()
    at_path(page, "/school/access-log")
    expect(page.locator("#chain-status")).to_contain_text("The log's hash chain verifies")
    visitor.visit("access log")
    page.get_by_label("Partner").select_option(label=tenant.partner_name)
    page.get_by_label("Outcome").select_option(label="Refused")
    fill_date(page.get_by_role("group", name="From"), granted_at)
    fill_date(page.get_by_role("group", name="To"), revoked_at)
    page.get_by_role("button", name="Apply filters").click()
    rows = page.locator("table tbody tr")
    expect(rows.first).to_contain_text("Refused")
    expect(rows.filter(has_text="Allowed")).to_have_count(0)
    visitor.visit("access log filtered")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    console_csv = Path(download.value.path()).read_bytes()
    day = timedelta(days=1)
    token = console.admin_token(tenant.admin)
    api = console.admin_get(
        token,
        "/v1/admin/access-log",
        {
            "partner_id": tenant.partner_id,
            "outcome": "denied",
            "since": rfc3339(granted_at.replace(hour=0, minute=0, second=0)),
            "until": rfc3339(revoked_at.replace(hour=0, minute=0, second=0) + day),
        },
        accept="text/csv",
    )
    assert api.status_code == 200, api.text
    assert console_csv == api.content
    assert console_csv.count(b"\n") >= 4, console_csv  # a header and three refused reads
    page.get_by_role("link", name="Reads after an end date").click()
    visitor.visit("reads after an end date")

    # Who could read what at a moment between the grant and the suspension.
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Decisions").click()
    at_path(page, "/school/decisions")
    visitor.visit("decisions")
    before = granted_at + timedelta(minutes=5)
    fill_date(page.get_by_role("group", name="Date"), before)
    page.get_by_label("Time").fill(f"{before:%H:%M}")
    page.get_by_role("button", name="Show decisions").click()
    expect(decision_row(page, tenant, BASIC)).to_contain_text("Allowed")
    expect(decision_row(page, tenant, CONTACTS)).to_contain_text("Allowed")
    expect(decision_row(page, tenant, DEMOGRAPHICS)).to_contain_text("Refused")
    visitor.visit("decisions before the suspension")
    decision = console.admin_get(
        token,
        "/v1/admin/decision",
        {"partner_id": tenant.partner_id, "area": BASIC, "at": rfc3339(before)},
    )
    assert decision.json()["allowed"] is True
    during = suspended_at + timedelta(minutes=5)
    fill_date(page.get_by_role("group", name="Date"), during)
    page.get_by_label("Time").fill(f"{during:%H:%M}")
    page.get_by_role("button", name="Show decisions").click()
    expect(decision_row(page, tenant, BASIC)).to_contain_text("Refused")
    expect(decision_row(page, tenant, BASIC)).to_contain_text("uspended")
    visitor.visit("decisions during the suspension")

    # Sign out: the session is over on the server, not only in this browser.
    kept = context.cookies()
    page.get_by_role("button", name="Sign out").click()
    signed_out(page)
    context.add_cookies(kept)  # type: ignore[arg-type]
    page.goto("/school")
    signed_out(page)
