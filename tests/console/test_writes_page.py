"""The "Writes" page: partners' writes for the school, and cancelling a queued one."""

from __future__ import annotations

import pytest

from tests.support.admin import World
from tests.support.console import csrf_of, post, submit
from tests.writes.support import MARKS, add_writing_partner, marks

pytestmark = pytest.mark.usefixtures("signed_in")


def test_the_page_lists_writes_and_cancels_a_queued_one(world: World) -> None:
    empty = world.client.get("/school/writes")
    assert empty.status_code == 200
    assert "No partner has sent a write" in empty.text
    assert 'href="/school/writes"' in empty.text  # in the navigation
    world.sign_in()  # the partner's consent is granted over the admin API
    partner = add_writing_partner(world)
    partner.grant()
    write_id = partner.write(MARKS, marks(4)).json()["write_id"]

    page = world.client.get("/school/writes")
    for text in ("Registerly", MARKS, "Queued", "Cancel"):
        assert text in page.text, text
    response = submit(world, "/school/writes", f"/school/writes/{write_id}/cancel", {})
    assert response.status_code == 303
    assert response.headers["location"] == "/school/writes?cancelled=1"
    after = world.client.get("/school/writes?cancelled=1").text
    assert "The write was cancelled" in after
    assert "Cancelled" in after
    assert partner.get(f"/writes/{write_id}").json()["status"] == "cancelled"


def test_a_cancel_without_the_csrf_token_changes_nothing(world: World) -> None:
    world.sign_in()
    partner = add_writing_partner(world)
    partner.grant()
    write_id = partner.write(MARKS, marks(1)).json()["write_id"]
    forged = post(world, f"/school/writes/{write_id}/cancel", {"csrf_token": "forged"})
    assert forged.status_code in (400, 403)
    assert partner.get(f"/writes/{write_id}").json()["status"] == "queued"
    assert csrf_of(world.client.get("/school/writes"))
