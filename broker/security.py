"""Credentials: generation, hashing at rest, the admin password policy, sealing.

Two kinds of hashing, on purpose.  Passwords are chosen by people and guessable, so they get
argon2id.  Machine secrets (agent keys, client secrets, tokens) are 256 random bits: a plain
SHA-256 digest cannot be reversed and lets the digest itself be the lookup key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
_COMMON_PASSWORDS = frozenset(
    {"password1!", "passw0rd!", "p@ssw0rd", "p@ssword1", "welcome1!", "qwerty123!", "letmein1!"}
)


def generate_secret(prefix: str, nbytes: int = 32) -> str:
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def digest_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest_secret(secret), stored_digest)


def password_policy_problems(password: str, email: str | None = None) -> list[str]:
    """Why a school admin's password is refused; empty when it is acceptable."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"at most {MAX_PASSWORD_LENGTH} characters")
    if not re.search(r"[A-Z]", password):
        problems.append("an upper-case letter")
    if not re.search(r"[a-z]", password):
        problems.append("a lower-case letter")
    if not re.search(r"\d", password):
        problems.append("a digit")
    if not re.search(r"[^A-Za-z0-9]", password):
        problems.append("a special character")
    if password.lower() in _COMMON_PASSWORDS:
        problems.append("to not be a commonly used password")
    local_part = email.split("@")[0].lower() if email else ""
    if len(local_part) >= 3 and local_part in password.lower():
        problems.append("to not contain the email address")
    return problems


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, stored_hash: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class SecretSealer(Protocol):
    """Encrypts the few secrets we must use in clear later (TOTP seeds, webhook secrets)."""

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes: ...

    def open(self, sealed: bytes, *, context: bytes) -> bytes: ...
