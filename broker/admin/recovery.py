"""Recovery codes: ten one-time codes that stand in for a lost authenticator app.

A code carries 50 random bits, so (like agent keys) a SHA-256 digest is enough at rest;
each is good once.  They are shown once, when issued, and never again.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from broker.admin.models import AdminRecoveryCode
from broker.security import digest_secret

RECOVERY_CODES = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed from paper


def _normalise(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _new_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def forget_recovery_codes(session: Session, admin_id: str) -> None:
    session.execute(delete(AdminRecoveryCode).where(col(AdminRecoveryCode.admin_id) == admin_id))


def issue_recovery_codes(session: Session, admin_id: str, now: datetime) -> list[str]:
    """Ten new codes for the admin; any older ones stop working."""
    forget_recovery_codes(session, admin_id)
    codes = [_new_code() for _ in range(RECOVERY_CODES)]
    for code in codes:
        session.add(
            AdminRecoveryCode(
                code_hash=digest_secret(_normalise(code)), admin_id=admin_id, created_at=now
            )
        )
    return codes


def has_recovery_codes(session: Session, admin_id: str) -> bool:
    stmt = select(AdminRecoveryCode.code_hash).where(AdminRecoveryCode.admin_id == admin_id)
    return session.exec(stmt.limit(1)).first() is not None


def unused_recovery_codes(session: Session, admin_id: str) -> int:
    stmt = select(AdminRecoveryCode.code_hash).where(
        AdminRecoveryCode.admin_id == admin_id, col(AdminRecoveryCode.used_at).is_(None)
    )
    return len(session.exec(stmt).all())


def use_recovery_code(session: Session, admin_id: str, code: str, now: datetime) -> bool:
    """True if `code` is one of the admin's unused codes, which is then used up.

    One UPDATE with the "unused" condition: two sign-ins racing with the same code cannot
    both win.
    """
    normalised = _normalise(code)
    if len(normalised) != 10:
        return False
    result = session.execute(
        update(AdminRecoveryCode)
        .where(
            col(AdminRecoveryCode.code_hash) == digest_secret(normalised),
            col(AdminRecoveryCode.admin_id) == admin_id,
            col(AdminRecoveryCode.used_at).is_(None),
        )
        .values(used_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
