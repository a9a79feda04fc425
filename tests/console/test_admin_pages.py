"""Admins of my school: invite with a one-time link, enrol, remove (never the last), password."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from broker.admin.models import AdminLoginFailure
from broker.console.models import AdminInvitation, ConsoleSession
from broker.db import session_scope
from broker.schools.models import SchoolAdmin
from broker.security import verify_password
from consent.models import AuditEvent
from tests.support.admin import PASSWORD, Admin, World
from tests.support.console import code_for, csrf_of, post, sign_in, submit

NEW_PASSWORD = "N3w!staple-battery"
NEWCOMER = "bursar@hilltop.sch.uk"


# Every test here starts with the admin signed in (`world` is the same object).
pytestmark = pytest.mark.usefixtures("signed_in")


def admin_row(world: World, email: str) -> SchoolAdmin | None:
    with session_scope(world.resources.engine) as session:
        return session.exec(select(SchoolAdmin).where(SchoolAdmin.email == email)).first()


def audit_actions(world: World) -> list[str]:
    with session_scope(world.resources.engine) as session:
        return [e.action for e in session.exec(select(AuditEvent)).all()]


def invite(world: World, email: str = NEWCOMER) -> str:
    """The enrolment link the page shows once, as a path."""
    response = submit(world, "/school/admins/add", "/school/admins/add", {"email": email})
    assert response.status_code == 200, response.text
    assert "This link will not be shown again" in response.text
    match = re.search(
        r'id="enrolment-link">(http://testserver(/school/enrol/[^<]+))<', response.text
    )
    assert match, response.text
    return match.group(2)


def test_the_list_shows_admins_you_and_the_authenticator_state(world: World) -> None:
    page = world.client.get("/school/admins")
    assert page.status_code == 200
    assert world.admin.email in page.text
    assert world.other_admin.email not in page.text  # another school's admin
    assert ">You</strong>" in page.text
    assert "Set up" in page.text
    assert "Change your password" in page.text


def test_invite_enrol_qr_code_recovery_codes_then_signed_in(world: World) -> None:
    link = invite(world)
    listing = world.client.get("/school/admins").text
    assert NEWCOMER in listing
    assert "Invitations not yet used" in listing
    with session_scope(world.resources.engine) as session:
        [invitation] = session.exec(select(AdminInvitation)).all()
    assert invitation.expires_at == world.now() + timedelta(days=7)
    assert link.rsplit("/", 1)[1] not in invitation.token_hash  # only the digest is stored

    world.client.cookies.clear()  # the newcomer's own browser
    page = world.client.get(link)
    assert page.status_code == 200
    assert NEWCOMER in page.text
    assert "Hilltop Academy" in page.text
    assert 'autocomplete="new-password"' in page.text
    data = {"csrf_token": csrf_of(page.text), "new-password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    response = post(world, link, data)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/school/sign-in/authenticator"

    qr = world.client.get("/school/sign-in/authenticator")
    assert qr.status_code == 200
    secret_match = re.search(r'id="totp-secret">([A-Z2-7]+)<', qr.text)
    assert secret_match
    secret = secret_match.group(1)
    newcomer = Admin(world.school_id, NEWCOMER, secret)
    data = {"csrf_token": csrf_of(qr.text), "code": code_for(world, newcomer)}
    response = post(world, "/school/sign-in/authenticator", data)
    assert response.headers["location"] == "/school/sign-in/recovery-codes", response.text
    codes = world.client.get("/school/sign-in/recovery-codes")
    response = post(world, "/school/sign-in/recovery-codes", {"csrf_token": csrf_of(codes.text)})
    assert response.headers["location"] == "/school"
    home = world.client.get("/school")
    assert home.status_code == 200
    assert "Hilltop Academy" in home.text

    row = admin_row(world, NEWCOMER)
    assert row is not None
    assert row.school_id == world.school_id
    assert row.totp_confirmed_at is not None
    assert verify_password(NEW_PASSWORD, row.password_hash)
    assert {"console.admin_invited", "console.admin_enrolled"} <= set(audit_actions(world))

    # The link worked once.
    world.client.cookies.clear()
    assert world.client.get(link).status_code == 410


def test_an_unknown_or_expired_link_is_refused(world: World) -> None:
    assert world.client.get("/school/enrol/mbi_nothing-like-this").status_code == 404
    assert world.client.get("/school/enrol/garbage").status_code == 404
    link = invite(world)
    world.clock.advance(timedelta(days=7))
    page = world.client.get(link)
    assert page.status_code == 410
    assert "already been used or has expired" in page.text


def test_enrolment_applies_the_password_policy(world: World) -> None:
    link = invite(world)
    world.client.cookies.clear()
    page = world.client.get(link)
    data = {"csrf_token": csrf_of(page.text), "new-password": "short", "confirm": "short"}
    response = post(world, link, data)
    assert response.status_code == 422
    assert "govuk-error-summary" in response.text
    for problem in ("at least 8 characters", "an upper-case letter", "a digit"):
        assert f"Your password needs {problem}" in response.text
    mismatch = {**data, "new-password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"}
    assert "The passwords do not match" in post(world, link, mismatch).text
    assert admin_row(world, NEWCOMER) is None
    assert world.client.get(link).status_code == 200  # still unused


def test_enrolment_without_its_csrf_token_changes_nothing(world: World) -> None:
    link = invite(world)
    world.client.cookies.clear()
    world.client.get(link)
    response = post(world, link, {"new-password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 403
    assert admin_row(world, NEWCOMER) is None


def test_inviting_an_existing_admin_or_a_bad_email_is_a_form_error(world: World) -> None:
    for email, message in (
        (world.other_admin.email, "already belongs to an admin account"),
        ("not-an-email", "Enter an email address in the correct format"),
        ("", "Enter an email address"),
    ):
        response = submit(world, "/school/admins/add", "/school/admins/add", {"email": email})
        assert response.status_code in (409, 422)
        assert "govuk-error-summary" in response.text
        assert message in response.text
        assert 'href="#email"' in response.text
    with session_scope(world.resources.engine) as session:
        assert session.exec(select(AdminInvitation)).all() == []


def test_an_invitation_without_its_csrf_token_is_refused(world: World) -> None:
    response = post(world, "/school/admins/add", {"email": NEWCOMER})
    assert response.status_code == 403
    with session_scope(world.resources.engine) as session:
        assert session.exec(select(AdminInvitation)).all() == []


def enrolled_second_admin(world: World) -> SchoolAdmin:
    link = invite(world)
    page = world.client.get(link)  # the same browser: enrolling signs it in as the newcomer
    data = {"csrf_token": csrf_of(page.text), "new-password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    assert post(world, link, data).status_code == 303
    sign_in(world)
    row = admin_row(world, NEWCOMER)
    assert row is not None
    return row


def test_the_last_admin_cannot_be_removed(world: World) -> None:
    me = admin_row(world, world.admin.email)
    assert me is not None
    page = world.client.get(f"/school/admins/{me.id}/remove")
    assert page.status_code == 200
    assert "Are you sure you want to remove yourself?" in page.text
    response = post(world, f"/school/admins/{me.id}/remove", {"csrf_token": csrf_of(page.text)})
    assert response.status_code == 409
    assert "You cannot remove the last admin" in response.text
    assert 'href="#remove"' in response.text
    assert 'id="remove"' in response.text
    row = admin_row(world, world.admin.email)
    assert row is not None
    assert row.disabled_at is None


def test_removing_an_admin_disables_them_and_ends_their_sessions(world: World) -> None:
    newcomer = enrolled_second_admin(world)
    with session_scope(world.resources.engine) as session:
        stmt = select(ConsoleSession).where(ConsoleSession.admin_id == newcomer.id)
        assert session.exec(stmt).all()  # the enrolment's session
    page = world.client.get(f"/school/admins/{newcomer.id}/remove")
    assert f"Are you sure you want to remove {NEWCOMER}?" in page.text
    no_token = post(world, f"/school/admins/{newcomer.id}/remove", {})
    assert no_token.status_code == 403
    assert admin_row(world, NEWCOMER).disabled_at is None  # type: ignore[union-attr]

    response = post(
        world, f"/school/admins/{newcomer.id}/remove", {"csrf_token": csrf_of(page.text)}
    )
    assert response.headers["location"] == "/school/admins?done=removed"
    listing = world.client.get(response.headers["location"]).text
    assert "The admin has been removed" in listing
    assert NEWCOMER not in listing
    row = admin_row(world, NEWCOMER)
    assert row is not None
    assert row.disabled_at == world.now()
    with session_scope(world.resources.engine) as session:
        stmt = select(ConsoleSession).where(ConsoleSession.admin_id == newcomer.id)
        assert session.exec(stmt).all() == []
    assert "console.admin_removed" in audit_actions(world)
    # Now the one left is the last.
    assert world.client.get(f"/school/admins/{newcomer.id}/remove").status_code == 404


def test_another_schools_admin_is_a_404(world: World) -> None:
    other = admin_row(world, world.other_admin.email)
    assert other is not None
    assert world.client.get(f"/school/admins/{other.id}/remove").status_code == 404
    page = world.client.get("/school/admins")
    response = post(world, f"/school/admins/{other.id}/remove", {"csrf_token": csrf_of(page.text)})
    assert response.status_code == 404
    row = admin_row(world, world.other_admin.email)
    assert row is not None
    assert row.disabled_at is None


def change(world: World, current: str, new: str, confirm: str | None = None) -> str:
    data = {"current-password": current, "new-password": new, "confirm": confirm or new}
    response = submit(world, "/school/account/password", "/school/account/password", data)
    if response.status_code == 303:
        return str(response.headers["location"])
    assert response.status_code == 422
    return response.text


def test_change_password_applies_the_policy(world: World) -> None:
    page = world.client.get("/school/account/password").text
    for autocomplete in ("current-password", "new-password"):
        assert f'autocomplete="{autocomplete}"' in page
    text = change(world, PASSWORD, "alllowercase")
    for problem in ("an upper-case letter", "a digit", "a special character"):
        assert f"Your new password needs {problem}" in text
    assert 'href="#new-password"' in text
    assert "The passwords do not match" in change(world, PASSWORD, NEW_PASSWORD, "Other!1aaaa")
    row = admin_row(world, world.admin.email)
    assert row is not None
    assert verify_password(PASSWORD, row.password_hash)


def test_a_wrong_current_password_counts_toward_the_lockout(world: World) -> None:
    text = change(world, "Wr0ng!horse", NEW_PASSWORD)
    assert "Your current password is wrong" in text
    assert 'href="#current-password"' in text
    with session_scope(world.resources.engine) as session:
        failures = session.exec(select(AdminLoginFailure)).all()
    assert [f.email for f in failures] == [world.admin.email]
    for _ in range(4):
        change(world, "Wr0ng!horse", NEW_PASSWORD)
    assert "Too many wrong passwords" in change(world, PASSWORD, NEW_PASSWORD)
    row = admin_row(world, world.admin.email)
    assert row is not None
    assert verify_password(PASSWORD, row.password_hash)


def test_change_password_keeps_this_session_and_ends_the_others(world: World) -> None:
    other_browser = TestClient(world.client.app)
    world_two = World(**{**world.__dict__, "client": other_browser})
    sign_in(world_two)
    assert other_browser.get("/school", follow_redirects=False).status_code == 200
    api = world.headers()

    assert change(world, PASSWORD, NEW_PASSWORD) == "/school/admins?done=password"
    assert "Your password has been changed" in world.client.get("/school/admins?done=password").text
    assert other_browser.get("/school", follow_redirects=False).status_code == 303
    assert world.client.get("/v1/admin/consents", headers=api).status_code == 401
    row = admin_row(world, world.admin.email)
    assert row is not None
    assert verify_password(NEW_PASSWORD, row.password_hash)
    assert "console.password_changed" in audit_actions(world)
    # The new password signs in.
    world.client.cookies.clear()
    page = world.client.get("/school/sign-in")
    form = {
        "csrf_token": csrf_of(page.text),
        "email": world.admin.email,
        "password": NEW_PASSWORD,
        "code": str(pyotp.TOTP(world.admin.totp_secret).at(world.now() + timedelta(seconds=30))),
    }
    world.clock.advance(timedelta(seconds=30))
    assert post(world, "/school/sign-in", form).status_code == 303


def test_a_password_change_without_its_csrf_token_changes_nothing(world: World) -> None:
    data = {"current-password": PASSWORD, "new-password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    assert post(world, "/school/account/password", data).status_code == 403
    row = admin_row(world, world.admin.email)
    assert row is not None
    assert verify_password(PASSWORD, row.password_hash)


def test_a_removed_admin_can_be_invited_back_with_a_new_authenticator(world: World) -> None:
    newcomer = enrolled_second_admin(world)
    old_secret = newcomer.totp_secret_sealed
    page = world.client.get(f"/school/admins/{newcomer.id}/remove")
    post(world, f"/school/admins/{newcomer.id}/remove", {"csrf_token": csrf_of(page.text)})
    link = invite(world)  # the same email, back again
    page = world.client.get(link)
    again = "An0ther!staple-battery"
    data = {"csrf_token": csrf_of(page.text), "new-password": again, "confirm": again}
    assert post(world, link, data).headers["location"] == "/school/sign-in/authenticator"
    row = admin_row(world, NEWCOMER)
    assert row is not None
    assert row.id == newcomer.id  # their history stays theirs
    assert row.disabled_at is None
    assert row.totp_confirmed_at is None  # a new app to enrol ...
    assert row.totp_secret_sealed != old_secret  # ... with a new secret
    assert verify_password(again, row.password_hash)
