"""Signing in to the console: the admin API's checks, then enrolment and recovery codes.

The password, TOTP, lockout and replay rules are `AdminAuth`'s, shared with
`POST /v1/admin/login`.  What the console adds is the first sign-in: an admin who has never
given a valid code is shown the QR code of their secret, confirms it with a code, and is
issued ten recovery codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from sqlmodel import Session

from broker.admin.auth import AdminAuth
from broker.admin.recovery import has_recovery_codes
from broker.admin.settings import AdminSettings
from broker.console.models import SessionStage
from broker.console.sessions import start_session
from broker.errors import DomainError
from broker.schools.models import SchoolAdmin
from broker.schools.service import TOTP_ISSUER, totp_context
from broker.security import SecretSealer
from consent.models import AuditEvent
from consent.repository import ConsentRepository


@dataclass(frozen=True, slots=True)
class SignInResult:
    token: str | None = None
    stage: SessionStage | None = None
    error: DomainError | None = None


def sign_in(
    session: Session,
    sealer: SecretSealer,
    settings: AdminSettings,
    *,
    email: str,
    password: str,
    code: str,
    now: datetime,
) -> SignInResult:
    """A session at the stage the admin has reached, or the error (the failure is recorded)."""
    auth = AdminAuth(session, sealer, settings)
    admin, error = auth.authenticate(email, password, code, now, code_required=False)
    if admin is None:
        return SignInResult(error=error)
    stage = next_stage(session, admin)
    action = "console.signed_in" if stage is SessionStage.SIGNED_IN else "console.password_ok"
    audit(session, admin.id, admin.school_id, action, now)
    return SignInResult(token=start_session(session, admin, stage, now), stage=stage)


def next_stage(session: Session, admin: SchoolAdmin) -> SessionStage:
    if admin.totp_confirmed_at is None:
        return SessionStage.ENROL
    if not has_recovery_codes(session, admin.id):
        return SessionStage.RECOVERY_CODES
    return SessionStage.SIGNED_IN


def confirm_enrolment(
    session: Session,
    sealer: SecretSealer,
    settings: AdminSettings,
    admin: SchoolAdmin,
    code: str,
    now: datetime,
) -> DomainError | None:
    """The first valid code from the new authenticator app; a wrong one counts as a failure."""
    _, error = AdminAuth(session, sealer, settings).second_factor_only(admin, code, now)
    return error


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str
    uri: str
    qr_data_uri: str


def enrolment(sealer: SecretSealer, admin: SchoolAdmin) -> Enrolment:
    secret = sealer.open(admin.totp_secret_sealed, context=totp_context(admin.id)).decode()
    uri = pyotp.TOTP(secret).provisioning_uri(name=admin.email, issuer_name=TOTP_ISSUER)
    qr = segno.make(uri, error="m")
    return Enrolment(secret, uri, qr.svg_data_uri(scale=4, border=2))


def audit(session: Session, admin_id: str, school_id: str, action: str, now: datetime) -> None:
    """Console actions join the admin API's in the audit trail."""
    ConsentRepository(session).add_audit(
        AuditEvent(at=now, actor=f"admin:{admin_id}", action=action, target=school_id)
    )
