"""The Restricted pupils page: restrict a pupil with a reason, see who is restricted, lift it;
bad input is a form error that changes nothing (no browser: plain HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.cache_wiring import build_keyring
from broker.db import session_scope
from broker.schools import restrictions
from tests.console.test_partner_pages import post
from tests.support.admin import World

pytestmark = pytest.mark.usefixtures("signed_in")

PAGE = "/school/restrictions"


def restricted(world: World) -> dict[str, Any]:
    with session_scope(world.resources.engine) as session:
        _, found = restrictions.load(session, build_keyring(world.resources), world.school_id)
    return found


def test_a_pupil_is_restricted_listed_and_lifted(world: World) -> None:
    shown = world.client.get(PAGE)
    assert shown.status_code == 200
    assert "No pupil is restricted." in shown.text
    assert 'href="/school/restrictions"' in shown.text  # in the console's menu
    done = post(world, PAGE, PAGE, student_id="stu-00042", reason="Safeguarding: court order")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/school/restrictions?done=restricted"
    listed = world.client.get(done.headers["location"]).text
    assert "no partner can read their data from now on" in listed
    assert "stu-00042" in listed
    assert "Safeguarding: court order" in listed
    assert f"by {world.admin.email}" in listed  # the admin by email, not an internal id
    assert restricted(world)["stu-00042"]["reason"] == "Safeguarding: court order"
    lifted = post(world, PAGE + "/lift", PAGE, student_id="stu-00042")
    assert lifted.status_code == 303, lifted.text
    assert restricted(world) == {}
    assert "No pupil is restricted." in world.client.get(PAGE).text
    again = post(world, PAGE + "/lift", PAGE, student_id="stu-00042")
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"student_id": "", "reason": "x"}, "Enter the pupil&#39;s id"),
        ({"student_id": "stu 1", "reason": "x"}, "up to 128 letters"),
        ({"student_id": "stu-1", "reason": "  "}, "Enter why this pupil"),
        ({"student_id": "stu-1", "reason": "x" * 1001}, "1,000 characters or fewer"),
    ],
)
def test_bad_input_is_a_form_error_and_restricts_no_one(
    world: World, form: dict[str, str], message: str
) -> None:
    answer = post(world, PAGE, PAGE, **form)
    assert answer.status_code == 422
    assert "There is a problem" in answer.text
    assert message in answer.text
    assert restricted(world) == {}


def test_without_its_csrf_token_nothing_is_restricted(world: World) -> None:
    answer = world.client.post(PAGE, data={"student_id": "stu-1", "reason": "x"})
    assert answer.status_code == 403
    assert restricted(world) == {}
