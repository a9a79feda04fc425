"""Applying an agent's upload: validated first, applied whole in one transaction, once.

A repeated `batch_id` returns the first answer and applies nothing, however the repeat
arrives (agent retry after a lost response, two deliveries racing).  A `data.updated`
event is written in the same transaction as the data, and only if something changed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.agenthub import held
from broker.agenthub.auth import AgentPrincipal
from broker.agenthub.models import UploadBatch
from broker.agenthub.uploads import (
    DEFAULT_MAX_RECORDS,
    DEFAULT_MAX_VALUES,
    Upload,
    parse_upload,
)
from broker.clock import rfc3339
from broker.db import session_scope
from broker.errors import ConflictError
from broker.events.service import emit
from cache.models import table_of
from cache.service import CacheService

_BATCHES = table_of(UploadBatch)
# Asked before every upload is applied: a statement built once, read as a row.
_EARLIER_BATCH = select(
    _BATCHES.c.batch_id, _BATCHES.c.school_id, _BATCHES.c.body_digest, _BATCHES.c.response
).where(_BATCHES.c.batch_id == bindparam("batch_id"))
_RECORD_BATCH = insert(_BATCHES)


def _earlier(session: Session, batch_id: str) -> Row[*tuple[Any, ...]] | None:
    """The batch as first applied, if it was."""
    return session.connection().execute(_EARLIER_BATCH, {"batch_id": batch_id}).first()


def _replay(batch: Row[*tuple[Any, ...]], principal: AgentPrincipal, digest: str) -> dict[str, Any]:
    if batch.school_id != principal.school_id:
        raise ConflictError(f"batch_id {batch.batch_id} was already used by another school")
    if batch.body_digest != digest:
        raise ConflictError(
            f"batch_id {batch.batch_id} was already applied with different content; "
            "a new batch needs a new batch_id"
        )
    return dict(batch.response)


def ingest(
    engine: Engine,
    cache: CacheService,
    principal: AgentPrincipal,
    body: bytes | bytearray,
    now: datetime,
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_values: int = DEFAULT_MAX_VALUES,
) -> dict[str, Any]:
    upload = parse_upload(body, now, max_records=max_records, max_values=max_values)
    digest = hashlib.sha256(body).hexdigest()
    try:
        with session_scope(engine) as session:
            earlier = _earlier(session, upload.batch_id)
            if earlier is not None:
                return _replay(earlier, principal, digest)
            response = _apply(session, cache, principal, upload, digest, now)
    except held.MassDeletionHeldError as exc:
        # The upload's transaction is rolled back; the hold is recorded in one of its own.
        with session_scope(engine) as session:
            held.record_held(session, school_id=principal.school_id, error=exc, now=now)
        raise
    except IntegrityError:
        # The same batch was applied concurrently and committed first: answer as it did.
        with session_scope(engine) as session:
            earlier = _earlier(session, upload.batch_id)
            if earlier is None:
                raise
            return _replay(earlier, principal, digest)
    return response


def _apply(
    session: Session,
    cache: CacheService,
    principal: AgentPrincipal,
    upload: Upload,
    digest: str,
    now: datetime,
) -> dict[str, Any]:
    # The cache drops the area's hot pages itself once this transaction commits.
    result = cache.apply_batch(
        session,
        school_id=principal.school_id,
        area=upload.area.name,
        mode=upload.mode,
        records=upload.records,
        deleted=upload.deleted,
        extracted_at=upload.extracted_at,
        now=now,
        deletion_guard=held.guard(
            session,
            school_id=principal.school_id,
            area=upload.area.name,
            batch_id=upload.batch_id,
            limit=upload.deletion_limit,
            now=now,
        ),
    )
    response = {
        "batch_id": upload.batch_id,
        "area": upload.area.name,
        # API.md: `applied` counts the records upserted, unchanged ones included.
        "applied": result.applied + result.unchanged,
        "deleted": result.deleted,
    }
    # In Core: an ORM object and its flush cost a quarter of a small upload (profiled).  A
    # concurrent duplicate batch_id fails here, inside the transaction.
    session.connection().execute(
        _RECORD_BATCH,
        {
            "batch_id": upload.batch_id,
            "school_id": principal.school_id,
            "area": upload.area.name,
            "mode": upload.mode,
            "body_digest": digest,
            "extracted_at": upload.extracted_at,
            "received_at": now,
            "response": response,
        },
    )
    if result.applied or result.deleted:
        emit(
            session,
            "data.updated",
            school_id=principal.school_id,
            area=upload.area.name,
            payload={
                "school_id": principal.school_id,
                "area": upload.area.name,
                "as_of": rfc3339(upload.extracted_at),
            },
            now=now,
        )
    return response
