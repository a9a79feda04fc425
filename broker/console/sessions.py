"""Console sessions: a random token in an HttpOnly cookie, its digest and state in the database.

A session ends after 30 minutes without a request and 12 hours after sign-in, whichever
comes first; signing out deletes it.  Until the second factor is settled a session is only
good for the enrolment pages (stage `enrol`) or for showing recovery codes once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col

from broker.console.models import ConsoleSession, SessionStage
from broker.schools.models import SchoolAdmin
from broker.security import digest_secret, generate_secret

COOKIE = "misbroker_console"
SIGN_IN_COOKIE = "misbroker_sign_in"  # double-submit CSRF token of the sign-in forms
TOKEN_PREFIX = "mbc"  # noqa: S105 - the prefix of console session tokens, not a secret
# A half-finished sign-in (QR code on screen) need not outlive a coffee.
_PENDING_LIFETIME = timedelta(minutes=15)
# Writing last_seen_at on every page view is a write per click; a minute's slack is harmless.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class LiveSession:
    row: ConsoleSession
    admin: SchoolAdmin


def start_session(session: Session, admin: SchoolAdmin, stage: SessionStage, now: datetime) -> str:
    """A new session for the admin; the token goes in the cookie and nowhere else."""
    token = generate_secret(TOKEN_PREFIX)
    session.add(
        ConsoleSession(
            token_hash=digest_secret(token),
            admin_id=admin.id,
            school_id=admin.school_id,
            stage=stage,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
        )
    )
    return token


def resolve_session(
    session: Session, token: str | None, now: datetime, limits: SessionLimits
) -> LiveSession | None:
    """The live session behind a cookie, touched; None when unknown, idle or too old."""
    if not token or not token.startswith(TOKEN_PREFIX + "_") or len(token) > 100:
        return None
    row = session.get(ConsoleSession, digest_secret(token))
    if row is None:
        return None
    lifetime = limits.absolute if row.stage is SessionStage.SIGNED_IN else _PENDING_LIFETIME
    admin = session.get(SchoolAdmin, row.admin_id)
    if (
        now - row.last_seen_at >= limits.idle
        or now - row.created_at >= lifetime
        or admin is None
        or admin.disabled_at is not None
    ):
        session.delete(row)
        return None
    if now - row.last_seen_at >= _TOUCH_EVERY:
        row.last_seen_at = now
        session.add(row)
    return LiveSession(row, admin)


def advance(session: Session, row: ConsoleSession, stage: SessionStage, now: datetime) -> None:
    row.stage = stage
    row.last_seen_at = now
    if stage is SessionStage.SIGNED_IN:
        row.created_at = now  # the 12 hours count from the full sign-in
    session.add(row)


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(
            delete(ConsoleSession).where(col(ConsoleSession.token_hash) == digest_secret(token))
        )


def end_sessions_of(session: Session, admin_id: str, *, keep: str | None = None) -> None:
    """Sign an admin out everywhere (removed, or a changed password), but for `keep`."""
    stmt = delete(ConsoleSession).where(col(ConsoleSession.admin_id) == admin_id)
    if keep is not None:
        stmt = stmt.where(col(ConsoleSession.token_hash) != digest_secret(keep))
    session.execute(stmt)
