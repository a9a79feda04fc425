"""Cutting one upload into batches the broker accepts: every body at most a byte limit.

Pure.  Sizes are exact, not estimated: a body is its envelope plus the records' compact
JSON and the deleted ids joined by commas, which is what `render` writes, so a part
planned at n bytes is n bytes once rendered.  Upserts come first and deletions last, so a
reader of the broker never sees an id deleted by one batch before the batches carrying the
rest of the upload's records have landed.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from agents.state import SpooledBatch, iso

GZIP_LEVEL: Final = 6
# Every batch_id is a UUID in its 36-character form, so the envelope's size is known ahead.
_SAMPLE_BATCH_ID: Final = "00000000-0000-0000-0000-000000000000"


@dataclass(slots=True)
class Part:
    """One batch's share of an upload: serialized records, then ids to delete."""

    records: list[bytes] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    size: int = 0  # the rendered body's length in bytes


def render(
    batch_id: str,
    area: str,
    mode: str,
    extracted_at: datetime,
    records: Sequence[bytes],
    deleted: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The upload body (`API.md`), byte-identical to `orjson.dumps` of the whole document.

    `extra` holds optional envelope members (`deletion_limit`), written before the records.
    """
    head = orjson.dumps(
        {
            "batch_id": batch_id,
            "area": area,
            "mode": mode,
            "extracted_at": iso(extracted_at),
            **(extra or {}),
        }
    )
    return b"".join(
        (
            head[:-1],
            b',"records":[',
            b",".join(records),
            b'],"deleted":',
            orjson.dumps(list(deleted)),
            b"}",
        )
    )


def gzip_body(body: bytes) -> bytes:
    # mtime=0: the same batch always gzips to the same bytes.
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def envelope_bytes(
    area: str, mode: str, extracted_at: datetime, extra: Mapping[str, Any] | None = None
) -> int:
    """The size of a body with no records and no deletions."""
    return len(render(_SAMPLE_BATCH_ID, area, mode, extracted_at, (), (), extra))


def body_bytes(overhead: int, records: Sequence[bytes], deleted: Sequence[str]) -> int:
    """The size of one body holding all of `records` and `deleted`."""
    return (
        overhead
        + sum(len(r) for r in records)
        + max(0, len(records) - 1)
        + sum(_id_bytes(d) for d in deleted)
        + max(0, len(deleted) - 1)
    )


def pack(
    records: Sequence[bytes], deleted: Sequence[str], *, limit: int, overhead: int
) -> list[Part]:
    """Consecutive parts, in order, each body at most `limit` bytes; never an empty list.

    Greedy: a part is closed when the next item would take it over the limit.  An item too
    large even alone gets a part of its own; the caller decides whether that is an error
    (extraction leaves such records out before packing, so there it cannot happen).
    """
    parts: list[Part] = []
    current = Part(size=overhead)
    for encoded in records:
        current = _add(parts, current, len(encoded), limit, overhead, bool(current.records))
        current.records.append(encoded)
    for record_id in deleted:
        current = _add(parts, current, _id_bytes(record_id), limit, overhead, bool(current.deleted))
        current.deleted.append(record_id)
    if current.records or current.deleted or not parts:
        parts.append(current)  # an empty upload is still one batch: it refreshes `as_of`
    return parts


def spooled(
    area: str,
    mode: str,
    extracted_at: datetime,
    parts: Sequence[Part],
    extra: Mapping[str, Any] | None = None,
) -> Iterator[SpooledBatch]:
    """One batch per part, each with a new batch_id, built only as it is consumed."""
    for part in parts:
        batch_id = str(uuid.uuid4())
        body = render(batch_id, area, mode, extracted_at, part.records, part.deleted, extra)
        yield SpooledBatch(
            batch_id=batch_id,
            area=area,
            mode=mode,
            extracted_at=extracted_at,
            records=len(part.records),
            deleted=len(part.deleted),
            body_gz=gzip_body(body),
        )


def _add(
    parts: list[Part], current: Part, size: int, limit: int, overhead: int, comma: bool
) -> Part:
    grown = current.size + size + (1 if comma else 0)
    if (current.records or current.deleted) and grown > limit:
        parts.append(current)
        return Part(size=overhead + size)
    current.size = grown
    return current


def _id_bytes(record_id: str) -> int:
    return len(orjson.dumps(record_id))
