"""School-admin login: argon2 password + TOTP, lockout, short-lived bearer tokens.

Every attempt is counted as a failure, in its own committed transaction, before the
password is checked (`broker.admin.guard.reserve_attempt`); a success deletes the email's
failures.  So `attempt` returns the outcome instead of raising; the caller commits, then
raises `outcome.error`.  Unknown emails cost one argon2 verification too, under the same
bounded gate, so their answer cannot be told apart by its content or its timing.
"""

from __future__ import annotations

import functools
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy import delete
from sqlmodel import Session, col, select

from broker.admin.guard import hash_gate, reserve_attempt
from broker.admin.models import AdminLoginFailure, AdminSession
from broker.admin.recovery import use_recovery_code
from broker.admin.settings import AdminSettings
from broker.errors import AuthenticationError, DomainError
from broker.schools.models import SchoolAdmin
from broker.schools.repository import SchoolRepository
from broker.schools.service import totp_context
from broker.security import (
    SecretSealer,
    digest_secret,
    generate_secret,
    hash_password,
    verify_password,
)

ADMIN_TOKEN_PREFIX = "mba"  # noqa: S105 - the prefix of admin tokens, not a secret
_BAD_LOGIN = "wrong email, password or code"
_STALE_SESSIONS = timedelta(days=1)


class LoginLockedError(DomainError):
    status = 429
    slug = "login-locked"
    title = "Too many failed logins"


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    admin_id: str
    school_id: str
    email: str

    @property
    def actor(self) -> str:
        return f"admin:{self.admin_id}"


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    token: str | None = None
    school_id: str | None = None
    expires_at: datetime | None = None
    error: DomainError | None = None


@functools.cache
def _dummy_hash() -> str:
    """A real argon2 hash of nothing anyone knows, verified against for unknown emails."""
    return hash_password(secrets.token_urlsafe(32))


class AdminAuth:
    def __init__(self, session: Session, sealer: SecretSealer, settings: AdminSettings) -> None:
        self.session = session
        self.sealer = sealer
        self.settings = settings
        self.schools = SchoolRepository(session)

    def attempt(self, email: str, password: str, code: str, now: datetime) -> LoginOutcome:
        """An API login: the checks of `authenticate`, then a bearer token."""
        admin, error = self.authenticate(email, password, code, now)
        if admin is None:
            return LoginOutcome(error=error)
        return self._issue(admin, admin.email, now)

    def authenticate(
        self, email: str, password: str, code: str, now: datetime, *, code_required: bool = True
    ) -> tuple[SchoolAdmin | None, DomainError | None]:
        """The admin if email, password and code are right; else the error to answer.

        `code` is a TOTP code or, for the console, one of the admin's recovery codes.  With
        `code_required=False` (the console's first sign-in, before an authenticator app is
        enrolled) an admin who has never given a valid code passes on the password alone.
        Every failure counts toward the lockout, whichever part was wrong.
        """
        email = email.strip().lower()
        with hash_gate().slot(self.settings.admin_login_hash_wait_seconds):
            locked_until = self._reserve(email, now)
            if locked_until is not None:
                return None, _locked(max(1, math.ceil((locked_until - now).total_seconds())))
            admin = self.schools.admin_by_email(email)
            password_ok = verify_password(password, admin.password_hash if admin else _dummy_hash())
        if admin is None or admin.disabled_at is not None or not password_ok:
            return None, _bad_login()
        if not code.strip() and not code_required and admin.totp_confirmed_at is None:
            self._clear_failures(email)
            return admin, None
        if not self._second_factor(admin, code, now):
            return None, _bad_login()
        self._clear_failures(email)
        return admin, None

    def confirm_password(
        self, admin: SchoolAdmin, password: str, now: datetime
    ) -> DomainError | None:
        """The admin's own password again (to change it): gated and counted like a sign-in."""
        email = admin.email.strip().lower()
        with hash_gate().slot(self.settings.admin_login_hash_wait_seconds):
            locked_until = self._reserve(email, now)
            if locked_until is not None:
                return _locked(max(1, math.ceil((locked_until - now).total_seconds())))
            password_ok = verify_password(password, admin.password_hash)
        if not password_ok:
            return _bad_login()
        self._clear_failures(email)
        return None

    def second_factor_only(
        self, admin: SchoolAdmin, code: str, now: datetime
    ) -> tuple[bool, DomainError | None]:
        """The code alone, for an admin whose password was checked a moment ago (enrolment)."""
        email = admin.email.strip().lower()
        locked_until = self._reserve(email, now)
        if locked_until is not None:
            return False, _locked(max(1, math.ceil((locked_until - now).total_seconds())))
        if not self._second_factor(admin, code, now):
            return False, _bad_login()
        self._clear_failures(email)
        return True, None

    def _reserve(self, email: str, now: datetime) -> datetime | None:
        """Count this attempt as a failure before checking it (see `broker.admin.guard`)."""
        return reserve_attempt(
            self.session.get_bind().engine,
            email,
            now,
            limit=self.settings.admin_lockout_failures,
            window=self.settings.lockout_window,
        )

    def _clear_failures(self, email: str) -> None:
        self.session.execute(delete(AdminLoginFailure).where(col(AdminLoginFailure.email) == email))

    def _second_factor(self, admin: SchoolAdmin, code: str, now: datetime) -> bool:
        step = self._totp_step(admin, code, now)
        if step is not None:
            admin.totp_last_step = step
            admin.totp_confirmed_at = admin.totp_confirmed_at or now
            self.session.add(admin)
            return True
        return use_recovery_code(self.session, admin.id, code, now)

    def resolve(self, token: str, now: datetime) -> AdminIdentity | None:
        """The admin behind a live token, or None (unknown, expired, admin disabled)."""
        found = self.session.get(AdminSession, digest_secret(token))
        if found is None or found.expires_at <= now:
            return None
        admin = self.session.get(SchoolAdmin, found.admin_id)
        if admin is None or admin.disabled_at is not None:
            return None
        return AdminIdentity(admin.id, admin.school_id, admin.email)

    def revoke(self, token: str) -> None:
        self.session.execute(
            delete(AdminSession).where(col(AdminSession.token_hash) == digest_secret(token))
        )

    def locked_until(self, email: str, now: datetime) -> datetime | None:
        """Locked for a window after the Nth failure within one window; None if not locked.

        Attempts while locked are refused without being counted, so the lock ends exactly
        one window after the failure that set it.
        """
        limit, window = self.settings.admin_lockout_failures, self.settings.lockout_window
        stmt = (
            select(AdminLoginFailure.at)
            .where(AdminLoginFailure.email == email)
            .order_by(col(AdminLoginFailure.at).desc())
            .limit(limit)
        )
        recent = list(self.session.exec(stmt))
        if len(recent) < limit or recent[0] - recent[-1] > window:
            return None
        until = recent[0] + window
        return until if now < until else None

    def _totp_step(self, admin: SchoolAdmin, code: str, now: datetime) -> int | None:
        """The time step `code` belongs to (one step of drift allowed), if not used before."""
        secret = self.sealer.open(admin.totp_secret_sealed, context=totp_context(admin.id))
        totp = pyotp.TOTP(secret.decode())
        code = code.strip()
        if len(code) != totp.digits or not code.isdigit():
            return None
        current = totp.timecode(now)
        last = admin.totp_last_step
        for step in (current - 1, current, current + 1):
            fresh = last is None or step > last  # a code is good once: replay is refused
            if fresh and hmac.compare_digest(totp.generate_otp(step), code):
                return step
        return None

    def _issue(self, admin: SchoolAdmin, email: str, now: datetime) -> LoginOutcome:
        self.session.execute(
            delete(AdminSession).where(col(AdminSession.expires_at) < now - _STALE_SESSIONS)
        )
        token = generate_secret(ADMIN_TOKEN_PREFIX)
        expires_at = now + self.settings.token_lifetime
        self.session.add(
            AdminSession(
                token_hash=digest_secret(token),
                admin_id=admin.id,
                school_id=admin.school_id,
                created_at=now,
                expires_at=expires_at,
            )
        )
        return LoginOutcome(token=token, school_id=admin.school_id, expires_at=expires_at)


def _bad_login() -> AuthenticationError:
    return AuthenticationError(_BAD_LOGIN)


def _locked(wait_seconds: int) -> LoginLockedError:
    minutes = math.ceil(wait_seconds / 60)
    return LoginLockedError(
        f"too many failed logins for this email: try again in {minutes} minute(s)",
        headers={"Retry-After": str(wait_seconds)},
        retry_after=wait_seconds,
    )
