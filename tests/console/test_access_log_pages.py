"""The access-log and decision pages, driven over HTTP as a browser without JavaScript would."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from broker.console.pages import access_log
from broker.console.web import format_instant
from tests.support.admin import (
    BASIC,
    CONTACTS,
    DEMOGRAPHICS,
    World,
    log_read,
)
from tests.support.console import sign_in

S = timedelta(seconds=1)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def rows(html: str) -> list[str]:
    """The entry numbers of the access-log table, in order."""
    return re.findall(r'<th scope="row" class="govuk-table__header">(\d+)</th>', html)


def test_a_stranger_is_sent_to_sign_in(world: World) -> None:
    for path in ("/school/access-log", "/school/access-log.csv", "/school/access-log/after-end"):
        response = world.client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/school/sign-in?next=")


def test_the_log_filters_pages_and_verifies(signed_in: World) -> None:
    world = signed_in
    for n in range(1, 6):
        log_read(world, n, areas=(CONTACTS,) if n == 2 else (BASIC,))
        world.clock.advance(S)
    log_read(world, 6, decision="denied", reason="not_granted")
    log_read(world, 7, partner_id=world.other_partner_id, areas=(CONTACTS,))
    page = world.client.get("/school/access-log")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert rows(page.text) == ["7", "6", "5", "4", "3", "2", "1"]
    assert "The log's hash chain verifies" in page.text
    assert 'href="/school/access-log/after-end"' in page.text
    for label in ("Partner", "Area", "Outcome", "From", "To", "Apply filters", "Download CSV"):
        assert label in page.text
    for field in ("partner", "area", "outcome", "from-day", "to-year"):
        assert f'for="{field}"' in page.text or f'id="{field}"' in page.text

    def shown(**params: str) -> list[str]:
        response = world.client.get("/school/access-log", params=params)
        assert response.status_code == 200, response.text
        return rows(response.text)

    assert shown(partner=world.other_partner_id) == ["7"]
    assert shown(area=CONTACTS) == ["7", "2"]
    assert shown(outcome="denied") == ["6"]
    assert shown(outcome="allowed", partner=world.partner_id) == ["5", "4", "3", "2", "1"]
    day = world.now()
    dates = {"from-day": str(day.day), "from-month": str(day.month), "from-year": str(day.year)}
    assert len(shown(**dates)) == 7
    before = day - timedelta(days=1)
    until = {"to-day": str(before.day), "to-month": str(before.month), "to-year": str(before.year)}
    assert shown(**until) == []


def test_next_page_follows_the_cursor(signed_in: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log, "PAGE_SIZE", 2)
    world = signed_in
    for n in range(1, 6):
        log_read(world, n)
    first = world.client.get("/school/access-log", params={"outcome": "allowed"})
    assert rows(first.text) == ["5", "4"]
    link = re.search(r'href="(/school/access-log\?[^"]*cursor=[^"]+)"', first.text)
    assert link, "no next page link"
    assert "outcome=allowed" in link[1]
    assert "Next page" in first.text
    second = world.client.get(link[1].replace("&amp;", "&"))
    assert rows(second.text) == ["3", "2"]
    assert "Newest entries" in second.text


def test_wrong_dates_are_summarised_and_linked_and_filter_nothing(signed_in: World) -> None:
    world = signed_in
    log_read(world, 1)
    response = world.client.get(
        "/school/access-log",
        params={"from-day": "31", "from-month": "2", "from-year": "2026", "to-day": "3"},
    )
    assert response.status_code == 422
    assert "There is a problem" in response.text
    assert 'href="#from-day">From date must be a real date' in response.text
    assert 'href="#to-month">To date must include a month and year' in response.text
    assert 'id="from-day"' in response.text
    assert 'id="to-month"' in response.text
    assert "govuk-input--error" in response.text
    assert 'value="31"' in response.text  # what was typed is kept
    assert rows(response.text) == []
    assert "Download CSV" not in response.text
    order = world.client.get(
        "/school/access-log",
        params={
            **{"from-day": "2", "from-month": "1", "from-year": "2026"},
            **{"to-day": "1", "to-month": "1", "to-year": "2026"},
        },
    )
    assert "To date must be the same as or after the from date" in order.text
    unknown = world.client.get("/school/access-log", params={"area": "nonsense"})
    assert 'href="#area"' in unknown.text


def test_the_csv_is_the_apis_byte_for_byte(signed_in: World) -> None:
    world = signed_in
    log_read(world, 1, areas=(BASIC, CONTACTS), request_id="=cmd")
    world.clock.advance(S)
    log_read(world, 2, decision="denied", reason="not_granted")
    log_read(world, 3, partner_id=world.other_partner_id, areas=(CONTACTS,))
    day = world.now()
    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {}),
        ({"area": CONTACTS}, {"area": CONTACTS}),
        ({"outcome": "denied"}, {"outcome": "denied"}),
        ({"partner": world.partner_id}, {"partner_id": world.partner_id}),
        (
            {"from-day": str(day.day), "from-month": str(day.month), "from-year": str(day.year)},
            {"since": day.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()},
        ),
    ]
    for console_params, api_params in cases:
        page = world.client.get("/school/access-log.csv", params=console_params)
        api = world.call("GET", "/access-log", params=api_params, headers={"Accept": "text/csv"})
        assert page.status_code == api.status_code == 200
        assert page.content == api.content, console_params
        for header in ("content-type", "content-disposition"):
            assert page.headers[header] == api.headers[header]
        assert page.headers["x-content-type-options"] == "nosniff"
    assert world.client.get("/school/access-log.csv", params={"to-day": "x"}).status_code == 422


def test_a_broken_chain_is_named(signed_in: World) -> None:
    world = signed_in
    for n in range(1, 4):
        log_read(world, n)
    with world.runtime.resources.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE access_log SET record_count = 99 WHERE seq = 2")
    page = world.client.get("/school/access-log")
    assert "hash chain verifies" not in page.text
    assert "hash chain is broken at entry 2" in page.text
    assert "govuk-warning-text" in page.text


def test_reads_after_an_end_date(signed_in: World) -> None:
    world = signed_in
    empty = world.client.get("/school/access-log/after-end")
    assert empty.status_code == 200
    assert "No consent has been revoked with an end date in the past" in empty.text
    consent = world.grant()
    start = world.now()
    world.clock.advance(timedelta(hours=1))
    log_read(world, 11, consent_id=consent["consent_id"])
    world.clock.advance(timedelta(hours=1))
    response = world.call(
        "POST", f"/consents/{consent['consent_id']}/revoke", json={"end_at": start.isoformat()}
    )
    assert response.status_code == 200, response.text
    sign_in(world)  # two idle hours ended the console session
    page = world.client.get("/school/access-log/after-end")
    assert page.status_code == 200
    assert "ExamPro" in page.text
    assert rows(page.text) == ["1"]
    assert "<caption" in page.text


# ---------------------------------------------------------------------------------------
# Who could read what at a given moment


def decision_cells(html: str) -> list[tuple[str, str, str]]:
    """(partner, area, Allowed/Refused) for each row of each partner's table of decisions."""
    cells = []
    for table in html.split("<table")[1:]:
        caption = re.search(r"<caption[^>]*>([^<]+)</caption>", table)
        assert caption is not None
        for area, shown in re.findall(
            r'<th scope="row" class="govuk-table__header">([^<]+)</th>\s*'
            r'<td class="govuk-table__cell"><strong class="govuk-tag[^"]*">(\w+)</strong>',
            table,
        ):
            cells.append((caption[1].strip(), area, shown))
    return cells


def without_consent(html: str) -> list[str]:
    """The partners the page lists as able to read nothing at that moment."""
    found = re.search(r"could read nothing of your school's data then: ([^<]+)\.</p>", html)
    return found[1].split(", ") if found else []


def test_decisions_default_to_now_and_match_the_api(signed_in: World) -> None:
    world = signed_in
    world.grant((BASIC, CONTACTS))
    granted = world.now()
    world.clock.advance(timedelta(days=2))
    sign_in(world)
    now = world.client.get("/school/decisions")
    assert now.status_code == 200
    assert f"Decisions as they stood at {format_instant(world.now())}" in now.text
    cells = decision_cells(now.text)
    assert ("ExamPro", BASIC, "Allowed") in cells
    assert ("ExamPro", DEMOGRAPHICS, "Refused") in cells
    assert without_consent(now.text) == ["Textly"]  # never answered: no table of refusals
    for label in ("Date", "Time (UTC)", "Show decisions", 'for="time"', 'id="date-day"'):
        assert label in now.text
    before = granted - timedelta(days=1)
    params = {
        "date-day": str(before.day),
        "date-month": str(before.month),
        "date-year": str(before.year),
        "time": f"{before:%H:%M}",
    }
    then = world.client.get("/school/decisions", params=params)
    assert then.status_code == 200
    at = before.replace(second=0, microsecond=0)
    assert f"Decisions as they stood at {format_instant(at)}" in then.text
    assert len(cells) == 3  # ExamPro's three requested areas
    assert decision_cells(then.text) == []  # before the grant nobody had a consent
    assert without_consent(then.text) == ["ExamPro", "Textly"]
    for area in (BASIC, CONTACTS, DEMOGRAPHICS):
        assert world.decision(area, at=at, partner=world.partner_id)["allowed"] is False


def test_a_wrong_date_or_time_is_summarised_and_shows_no_table(signed_in: World) -> None:
    world = signed_in
    response = world.client.get(
        "/school/decisions",
        params={"date-day": "30", "date-month": "2", "date-year": "2026", "time": "25:00"},
    )
    assert response.status_code == 422
    assert 'href="#date-day">Date must be a real date' in response.text
    assert 'href="#time">Enter a real time' in response.text
    assert "Decisions as they stood" not in response.text
    assert 'value="25:00"' in response.text
    missing = world.client.get("/school/decisions", params={"time": "10:00"})
    assert 'href="#date-day">Enter a date' in missing.text
