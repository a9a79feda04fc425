"""A school's admins, managed by its admins: invite, enrol, remove, change a password.

There is no email: an invitation is a one-time link shown once to the admin who made it
(only its digest is stored), good for seven days.  The new admin sets a password on it
and then enrols an authenticator app exactly as a CLI-made admin does on first sign-in.
A school never loses its last active admin, since nobody else could sign in for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from broker.admin.auth import AdminAuth, AdminIdentity, LoginLockedError
from broker.admin.models import AdminSession
from broker.admin.settings import AdminSettings
from broker.console.models import AdminInvitation
from broker.console.sessions import end_sessions_of
from broker.errors import ConflictError, DomainError, InvalidInputError, NotFoundError
from broker.schools.models import School, SchoolAdmin, SchoolStatus
from broker.schools.repository import SchoolRepository
from broker.schools.service import add_admin, normalise_email
from broker.security import (
    SecretSealer,
    digest_secret,
    generate_secret,
    hash_password,
    password_policy_problems,
)
from consent.models import AuditEvent
from consent.repository import ConsentRepository

INVITATION_LIFETIME = timedelta(days=7)
INVITATION_PREFIX = "mbi"


class InvitationGoneError(DomainError):
    status = 410
    slug = "invitation-gone"
    title = "This enrolment link can no longer be used"


class LastAdminError(ConflictError):
    """Removing this admin would leave the school with nobody who can sign in."""


class PasswordRejectedError(InvalidInputError):
    """A password the policy refuses: each problem is listed, as the form shows them."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("password too weak: it needs " + ", ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Invited:
    invitation: AdminInvitation
    token: str  # shown once, never stored


def active_admins(session: Session, school_id: str) -> Sequence[SchoolAdmin]:
    stmt = (
        select(SchoolAdmin)
        .where(SchoolAdmin.school_id == school_id, col(SchoolAdmin.disabled_at).is_(None))
        .order_by(col(SchoolAdmin.created_at), col(SchoolAdmin.email))
    )
    return session.exec(stmt).all()


def pending_invitations(
    session: Session, school_id: str, now: datetime
) -> Sequence[AdminInvitation]:
    stmt = (
        select(AdminInvitation)
        .where(
            AdminInvitation.school_id == school_id,
            col(AdminInvitation.used_at).is_(None),
            AdminInvitation.expires_at > now,
        )
        .order_by(col(AdminInvitation.created_at))
    )
    return session.exec(stmt).all()


def invite(session: Session, by: AdminIdentity, email: str, now: datetime) -> Invited:
    """A one-time enrolment link for `email`; a newer link for the same email replaces older."""
    _require_active_school(session, by.school_id)
    if not email.strip():
        raise InvalidInputError("Enter an email address")
    try:
        email = normalise_email(email)
    except InvalidInputError:
        raise InvalidInputError(
            "Enter an email address in the correct format, like name@school.sch.uk"
        ) from None
    existing = SchoolRepository(session).admin_by_email(email)
    # A removed admin of this school may be invited back (add_admin readmits them).
    if existing is not None and (
        existing.disabled_at is None or existing.school_id != by.school_id
    ):
        raise ConflictError("That email address already belongs to an admin account")
    session.execute(
        delete(AdminInvitation).where(
            col(AdminInvitation.school_id) == by.school_id,
            col(AdminInvitation.email) == email,
            col(AdminInvitation.used_at).is_(None),
        )
    )
    token = generate_secret(INVITATION_PREFIX)
    invitation = AdminInvitation(
        token_hash=digest_secret(token),
        school_id=by.school_id,
        email=email,
        created_by=by.actor,
        created_at=now,
        expires_at=now + INVITATION_LIFETIME,
    )
    session.add(invitation)
    _audit(session, by.actor, "console.admin_invited", by.school_id, now, email=email)
    return Invited(invitation, token)


def open_invitation(session: Session, token: str, now: datetime) -> AdminInvitation:
    """The invitation behind a link: 404 when unknown, 410 when used or expired."""
    invitation = None
    if token.startswith(INVITATION_PREFIX + "_") and len(token) <= 100:
        invitation = session.get(AdminInvitation, digest_secret(token))
    if invitation is None:
        raise NotFoundError(
            "This enrolment link is not valid. Check you copied all of it, "
            "or ask an admin of your school for a new one."
        )
    if invitation.used_at is not None or invitation.expires_at <= now:
        raise InvitationGoneError(
            "This enrolment link has already been used or has expired. "
            "Ask an admin of your school for a new one."
        )
    return invitation


def accept_invitation(
    session: Session, sealer: SecretSealer, token: str, password: str, now: datetime
) -> SchoolAdmin:
    """The new admin, with the password they chose and a TOTP secret yet to be enrolled."""
    invitation = open_invitation(session, token, now)
    problems = password_policy_problems(password, invitation.email)
    if problems:
        raise PasswordRejectedError(problems)
    new = add_admin(
        SchoolRepository(session),
        sealer,
        school_id=invitation.school_id,
        email=invitation.email,
        password=password,
        now=now,
    )
    invitation.used_at = now
    session.add(invitation)
    actor = f"admin:{new.admin.id}"
    _audit(
        session,
        actor,
        "console.admin_enrolled",
        invitation.school_id,
        now,
        invited_by=invitation.created_by,
    )
    return new.admin


def admin_of_school(session: Session, school_id: str, admin_id: str) -> SchoolAdmin:
    """An active admin of this school; any other id is a 404, whoever it belongs to."""
    admin = session.get(SchoolAdmin, admin_id)
    if admin is None or admin.school_id != school_id or admin.disabled_at is not None:
        raise NotFoundError(f"no admin {admin_id!r} in this school")
    return admin


def remove_admin(session: Session, by: AdminIdentity, admin_id: str, now: datetime) -> SchoolAdmin:
    """Disable an admin and end every session they have, but never the school's last one."""
    # Lock the school's row so two admins removing each other cannot both succeed.
    session.exec(select(School).where(School.id == by.school_id).with_for_update()).one()
    admin = admin_of_school(session, by.school_id, admin_id)
    count = session.exec(
        select(func.count())
        .select_from(SchoolAdmin)
        .where(SchoolAdmin.school_id == by.school_id, col(SchoolAdmin.disabled_at).is_(None))
    ).one()
    if count <= 1:
        raise LastAdminError("You cannot remove the last admin")
    admin.disabled_at = now
    session.add(admin)
    end_sessions_of(session, admin.id)
    session.execute(delete(AdminSession).where(col(AdminSession.admin_id) == admin.id))
    _audit(
        session,
        by.actor,
        "console.admin_removed",
        by.school_id,
        now,
        admin_id=admin.id,
        email=admin.email,
    )
    return admin


@dataclass(frozen=True, slots=True)
class PasswordChange:
    """The form's problems by field (current, new, confirm); empty when the change was made."""

    problems: dict[str, list[str]]

    @property
    def done(self) -> bool:
        return not self.problems


def change_password(
    session: Session,
    sealer: SecretSealer,
    settings: AdminSettings,
    by: AdminIdentity,
    *,
    current: str,
    new: str,
    confirm: str,
    keep_session: str,
    now: datetime,
) -> PasswordChange:
    """Re-hash the admin's password and sign them out elsewhere.

    A wrong current password counts toward the sign-in lockout like a failed login, and
    is refused without being checked while the lockout lasts, so this form cannot be used
    to guess a password the sign-in page would stop.
    """
    admin = admin_of_school(session, by.school_id, by.admin_id)
    problems: dict[str, list[str]] = {}
    if not current:
        problems["current"] = ["Enter your current password"]
    else:
        error = AdminAuth(session, sealer, settings).confirm_password(admin, current, now)
        if isinstance(error, LoginLockedError):
            minutes = math.ceil(int(error.extra.get("retry_after", 60)) / 60)
            problems["current"] = [f"Too many wrong passwords: try again in {minutes} minutes"]
        elif error is not None:
            problems["current"] = ["Your current password is wrong"]
    if not new:
        problems["new"] = ["Enter a new password"]
    else:
        policy = password_policy_problems(new, admin.email)
        if policy:
            problems["new"] = [f"Your new password needs {p}" for p in policy]
        elif new != confirm:
            problems["confirm"] = ["The passwords do not match"]
    if problems:
        return PasswordChange(problems)
    admin.password_hash = hash_password(new)
    session.add(admin)
    end_sessions_of(session, admin.id, keep=keep_session)
    session.execute(delete(AdminSession).where(col(AdminSession.admin_id) == admin.id))
    _audit(session, by.actor, "console.password_changed", by.school_id, now)
    return PasswordChange({})


def _require_active_school(session: Session, school_id: str) -> None:
    school = session.get(School, school_id)
    if school is None or school.status is not SchoolStatus.ACTIVE:
        raise ConflictError("this school is closed")


def _audit(
    session: Session, actor: str, action: str, school_id: str, now: datetime, **detail: str
) -> None:
    ConsentRepository(session).add_audit(
        AuditEvent(at=now, actor=actor, action=action, target=school_id, detail=detail)
    )
