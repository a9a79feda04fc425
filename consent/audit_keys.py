"""The deployment's access-log key: generated once, stored sealed under the KEK.

Whoever can write to the database but does not hold the KEK cannot recompute a keyed
chain, so cannot rewrite a school's log without `audit verify` noticing.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Final, Protocol, TypeAlias

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from consent.chain import school_key
from consent.models import AuditKeyRow

AUDIT_KEY_ID: Final = 1
AUDIT_KEY_CONTEXT: Final = b"audit-key:1"
AUDIT_KEY_BYTES: Final = 32

UnitOfWork: TypeAlias = Callable[[], AbstractContextManager[Session]]


class Sealer(Protocol):
    """What the broker's KEK sealer offers (structurally; consent imports nothing of it)."""

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes: ...

    def open(self, sealed: bytes, *, context: bytes) -> bytes: ...


class AuditKeyring:
    """Loads (or creates, once per deployment) the audit key and derives per-school keys.

    Each load or creation is its own short transaction, so call `key_for` before opening
    the transaction that appends: on SQLite a second writer would wait for the first.
    """

    def __init__(self, unit: UnitOfWork, sealer: Sealer, now: Callable[[], datetime]) -> None:
        self._unit = unit
        self._sealer = sealer
        self._now = now
        self._key: bytes | None = None
        self._schools: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def key_for(self, school_id: str) -> bytes:
        found = self._schools.get(school_id)
        if found is None:
            found = self._schools[school_id] = school_key(self.audit_key(), school_id)
        return found

    def audit_key(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._load() or self._create()
            return self._key

    def existing_key_for(self, school_id: str) -> bytes | None:
        """The school's key if the deployment has an audit key yet; never creates one."""
        with self._lock:
            if self._key is None:
                self._key = self._load()
        return None if self._key is None else self.key_for(school_id)

    def _load(self) -> bytes | None:
        with self._unit() as session:
            row = session.get(AuditKeyRow, AUDIT_KEY_ID)
            sealed = None if row is None else row.key_sealed
        return None if sealed is None else self._sealer.open(sealed, context=AUDIT_KEY_CONTEXT)

    def _create(self) -> bytes:
        key = secrets.token_bytes(AUDIT_KEY_BYTES)
        sealed = self._sealer.seal(key, context=AUDIT_KEY_CONTEXT)
        try:
            with self._unit() as session:
                session.add(AuditKeyRow(id=AUDIT_KEY_ID, key_sealed=sealed, created_at=self._now()))
        except IntegrityError:
            pass  # another process created it first: theirs is the key
        loaded = self._load()
        assert loaded is not None
        return loaded
