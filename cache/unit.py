"""Side effects that must wait for the caller's commit (deleting blobs, dropping hot pages).

The blob store and Redis are not in the SQL transaction.  Deleting a blob before the rows
that point at it are committed would lose data if the commit failed; so deletions are
queued on the session and run only after a commit, and forgotten on rollback.  A failed
deletion leaves an orphan blob: still ciphertext, and under its area's prefix, so the
area's purge or its school's shred removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)
_PENDING: Final = "cache.after_commit"


def after_commit(session: Session, action: Callable[[], object]) -> None:
    """Run `action` once the session's current transaction commits; drop it otherwise."""
    pending: list[Callable[[], object]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _run)
        event.listen(session, "after_transaction_end", _forget)
    pending.append(action)


def _run(session: Session) -> None:
    actions: list[Callable[[], object]] = session.info.get(_PENDING, [])
    session.info[_PENDING] = []
    for action in actions:
        try:
            action()
        except Exception:
            # Committed data is right; only cleanup failed.  Never fail the caller's commit.
            log.exception("cache cleanup after commit failed")


def _forget(session: Session, transaction: SessionTransaction, *_: Any) -> None:
    if transaction.parent is None:
        session.info[_PENDING] = []
