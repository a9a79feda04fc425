"""The partner pages without a browser: grant, change, revoke, suspend, resume, receipt."""

from __future__ import annotations

from datetime import timedelta

import pytest
from httpx import Response

from broker.clock import rfc3339
from tests.support.admin import BASIC, CONTACTS, DEMOGRAPHICS, World
from tests.support.console import csrf_of

# Every test here starts with the admin signed in (`world` is the same object).
pytestmark = pytest.mark.usefixtures("signed_in")


def page(world: World) -> str:
    return f"/school/partners/{world.partner_id}"


def post(world: World, path: str, form_page: str, **data: object) -> Response:
    token = csrf_of(world.client.get(form_page))
    answer: Response = world.client.post(
        path, data={"csrf_token": token, **data}, follow_redirects=False
    )
    return answer


def test_grant_shows_every_field_before_sharing_then_shares(world: World) -> None:
    partner = world.client.get(page(world))
    assert partner.status_code == 200
    assert "Pupil premium reporting" in partner.text  # the partner's reason
    assert "Sensitive" in partner.text  # students.demographics is marked
    assert partner.headers["cache-control"] == "no-store"
    assert "unsafe-inline" not in partner.headers["content-security-policy"]
    check = post(world, page(world) + "/grant", page(world), areas=[BASIC, CONTACTS], mode="read")
    assert check.status_code == 200
    assert "Check what you will share" in check.text
    assert "legal_forename" in check.text  # fields listed
    assert world.call("GET", "/consents").json()["data"] == []  # nothing shared yet
    done = world.client.post(
        page(world) + "/grant/confirm",
        data={"csrf_token": csrf_of(check.text), "areas": [BASIC, CONTACTS], "mode": "read"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    [consent] = world.call("GET", "/consents").json()["data"]
    assert consent["areas"] == [CONTACTS, BASIC] or sorted(consent["areas"]) == [BASIC, CONTACTS]
    assert world.decision(BASIC)["allowed"] is True


def test_grant_without_areas_is_a_form_error_and_changes_nothing(world: World) -> None:
    answer = post(world, page(world) + "/grant", page(world), mode="read")
    assert answer.status_code == 422
    assert "Select at least one data area" in answer.text
    assert world.call("GET", "/consents").json()["data"] == []


def test_a_form_without_its_csrf_token_changes_nothing(world: World) -> None:
    answer = world.client.post(
        page(world) + "/grant/confirm", data={"areas": [BASIC], "mode": "read"}
    )
    assert answer.status_code == 403
    assert world.call("GET", "/consents").json()["data"] == []


def test_retrospective_revocation_states_the_grace_end_before_confirming(world: World) -> None:
    world.grant((BASIC, DEMOGRAPHICS))
    now = world.now()
    yesterday = now - timedelta(days=1)
    check = post(
        world, page(world) + "/revoke", page(world) + "/revoke",
        **{"end-day": str(yesterday.day), "end-month": str(yesterday.month),
           "end-year": str(yesterday.year)}, time="09:00",
    )  # fmt: skip
    assert check.status_code == 200, check.text
    expected = rfc3339(now + timedelta(hours=72))
    assert f'data-instant="{expected}"' in check.text
    assert world.call("GET", "/consents").json()["data"][0]["status"] == "active"
    end_at = check.text.split('name="end_at" value="')[1].split('"')[0]
    done = world.client.post(
        page(world) + "/revoke/confirm",
        data={"csrf_token": csrf_of(check.text), "end_at": end_at, "reason": ""},
        follow_redirects=False,
    )
    assert done.status_code == 303
    [consent] = world.call("GET", "/consents").json()["data"]
    assert consent["status"] == "ending"
    assert consent["ends_at"] == expected


def test_an_invalid_end_date_is_a_form_error(world: World) -> None:
    world.grant((BASIC,))
    answer = post(world, page(world) + "/revoke", page(world) + "/revoke",
                  **{"end-day": "31", "end-month": "2", "end-year": "2027"})  # fmt: skip
    assert answer.status_code == 422
    assert "There is a problem" in answer.text
    assert 'href="#end-day"' in answer.text


def test_suspend_then_resume(world: World) -> None:
    world.grant((BASIC,))
    post(world, page(world) + "/suspend", page(world) + "/suspend", reason="Breach reported")
    assert world.decision(BASIC)["allowed"] is False
    partner = world.client.get(page(world))
    assert "Resume access" in partner.text
    assert "Breach reported" in partner.text
    post(world, page(world) + "/resume", page(world))
    assert world.decision(BASIC)["allowed"] is True


def test_receipt_page_and_json_and_another_schools_consent_is_404(world: World) -> None:
    consent = world.grant((BASIC,))
    receipt = world.client.get(f"/school/consents/{consent['consent_id']}/receipt")
    assert receipt.status_code == 200
    assert "Consent receipt" in receipt.text
    as_json = world.client.get(f"/school/consents/{consent['consent_id']}/receipt.json")
    assert as_json.json() == world.call("GET", f"/consents/{consent['consent_id']}/receipt").json()
    assert world.client.get("/school/consents/cns_nope/receipt").status_code == 404
    assert world.client.get("/school/partners/prt_nope").status_code == 404
