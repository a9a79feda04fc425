"""The partner page's fields and pupils: share or stop sharing a field, review what a new
request version adds, and choose the year groups shared (no browser: plain HTTP)."""

from __future__ import annotations

import pytest

from broker.db import session_scope
from broker.partners.requests import RequestVersions
from tests.console.test_partner_pages import page, post
from tests.support.admin import BASIC, World

pytestmark = pytest.mark.usefixtures("signed_in")

REQUEST = {
    "areas": {
        BASIC: {
            "reason": "Exam entries",
            "fields": {
                "upn": {"required": True, "reason": "Match candidates"},
                "house": {"required": False, "reason": "House points"},
            },
        }
    }
}


def test_fields_and_pupils_shared_are_chosen_on_the_partner_page(world: World) -> None:
    with session_scope(world.resources.engine) as session:
        RequestVersions(session).add(world.partner_id, REQUEST, world.now())
    consent = world.grant((BASIC,))
    shown = world.client.get(page(world))
    assert shown.status_code == 200
    assert "Fields shared" in shown.text
    assert "Optional" in shown.text
    assert "Share house" in shown.text  # optional: off until shared
    assert world.decision(BASIC)["areas"][0]["fields"] == ["upn"]
    done = post(
        world, page(world) + "/fields", page(world), area=BASIC, field="house", action="share"
    )
    assert done.status_code == 303, done.text
    assert world.decision(BASIC)["areas"][0]["fields"] == ["house", "upn"]
    assert "Stop sharing house" in world.client.get(page(world)).text
    # Only some year groups: the rule is recorded in the consent's history.
    missing = post(world, page(world) + "/audience", page(world), who="years")
    assert missing.status_code == 422
    assert "Select at least one year group" in missing.text
    done = post(world, page(world) + "/audience", page(world), who="years", year_groups=["Year 10"])
    assert done.status_code == 303, done.text
    view = world.call("GET", f"/consents/{consent['consent_id']}").json()
    assert view["audience"]["year_groups"] == ["Year 10"]
    assert [e["type"] for e in view["events"]][-1] == "audience_changed"
    unknown = post(world, page(world) + "/fields", page(world), area=BASIC, field="shoe")
    assert unknown.status_code in (400, 422)
    assert world.decision(BASIC)["areas"][0]["fields"] == ["house", "upn"]


def test_an_area_with_nothing_to_decide_is_folded(world: World) -> None:
    """A partner that asked for whole areas (no field reasons, nothing optional): each area's
    fields sit in a details element, not forty open rows; one with choices stays open."""
    world.grant((BASIC,))
    shown = world.client.get(page(world)).text
    summary = f"{BASIC}: all "
    assert summary in shown
    assert "fields shared, every one required" in shown
    folded = shown.index('<details class="govuk-details">')
    assert folded < shown.index(summary) < shown.index(f">{BASIC}</caption>")
    with session_scope(world.resources.engine) as session:
        RequestVersions(session).add(world.partner_id, REQUEST, world.now())
    chosen = world.client.get(page(world)).text
    assert summary not in chosen  # an optional field and reasons: the table stays open
    assert ">house</th>" in chosen


def test_pupils_are_named_in_and_out_of_the_audience(world: World) -> None:
    consent = world.grant((BASIC,))

    def audience() -> dict[str, object]:
        view = world.call("GET", f"/consents/{consent['consent_id']}").json()
        found: dict[str, object] = view["audience"]
        return found

    done = post(
        world, page(world) + "/audience", page(world),
        who="all", exclude_students="stu-00002\r\nstu-00001, stu-00002",
    )  # fmt: skip
    assert done.status_code == 303, done.text
    assert audience() == {
        "year_groups": None,
        "include_students": None,
        "exclude_students": ["stu-00001", "stu-00002"],
    }
    shown = world.client.get(page(world)).text
    assert "stu-00001\nstu-00002</textarea>" in shown  # the form shows what is saved
    done = post(
        world, page(world) + "/audience", page(world),
        who="years", year_groups=["Year 7"], include_students="stu-00009",
        exclude_students="",
    )  # fmt: skip
    assert done.status_code == 303, done.text
    assert audience() == {
        "year_groups": ["Year 7"],
        "include_students": ["stu-00009"],
        "exclude_students": [],
    }
    # Bad ids and an empty "only some" are form errors that change nothing.
    bad = post(world, page(world) + "/audience", page(world), who="all", exclude_students="<b>")
    assert bad.status_code == 422
    assert "&lt;b&gt; is not a pupil id" in bad.text
    empty = post(world, page(world) + "/audience", page(world), who="years")
    assert empty.status_code == 422
    assert "Select at least one year group or name a pupil" in empty.text
    assert audience()["include_students"] == ["stu-00009"]
