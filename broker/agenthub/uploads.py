"""Decoding and validating an agent's upload before anything is applied.

Everything here is pure: bytes in, a validated upload or a precise error out.  An error
names the record (index and id) and the field, so an agent can log exactly what to fix.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from agents.deletion_guard import DEFAULT_LIMIT, DeletionLimit, parse_limit
from broker.errors import DomainError, InvalidInputError, PayloadTooLargeError
from broker.jsonlimits import too_many_values
from consent.areas import (
    Area,
    FieldError,
    UnknownAreaError,
    get_area,
    is_valid_record_id,
    parse_instant,
    record_is_valid,
    validate_record,
)
from consent.record_types import records_pass

# An MIS clock a little ahead of ours is normal; more than this is a bug at the school.
ALLOWED_CLOCK_SKEW = timedelta(minutes=5)
MAX_REPORTED_ERRORS = 50
# The defaults of `BrokerSettings.upload_max_records` / `upload_max_values`.
DEFAULT_MAX_RECORDS = 500_000
DEFAULT_MAX_VALUES = 8_000_000
_ENVELOPE = frozenset(
    {"batch_id", "area", "mode", "extracted_at", "records", "deleted", "deletion_limit"}
)


class UploadRejectedError(DomainError):
    status = 422
    slug = "invalid-upload"
    title = "Upload rejected"


class UnsupportedEncodingError(DomainError):
    status = 415
    slug = "unsupported-encoding"
    title = "Unsupported content encoding"


@dataclass(frozen=True, slots=True)
class Upload:
    batch_id: str
    area: Area
    mode: Literal["full", "delta"]
    extracted_at: datetime
    records: list[dict[str, Any]]
    deleted: list[str]
    # The agent's configured mass-deletion threshold (the school's choice), else the default.
    deletion_limit: DeletionLimit = DEFAULT_LIMIT


# At most this many uploads in one sequence (`POST /v1/agent/uploads/sequence`); the
# bytes are bounded as one upload's are.
MAX_SEQUENCE_UPLOADS = 256
# Inflated a piece at a time into one growing buffer: never more than the limit plus a piece.
_INFLATE_PIECE = 1024 * 1024


def decode_body(raw: bytes, content_encoding: str | None, max_bytes: int) -> bytes | bytearray:
    """Undo gzip if declared, refusing anything that inflates beyond `max_bytes`.

    A gzip body may hold several members one after the other (RFC 1952 section 2.2); they
    inflate to their concatenation, as `gunzip` does.  An agent sends a sequence of
    uploads that way, each member as it was spooled.  The limit is on the whole.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedEncodingError(f"Content-Encoding {encoding!r}: use gzip or none")
    body = bytearray()
    pending = raw
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not inflater.eof:
                # max_length bounds each piece, so a gzip bomb stops here, not in memory.
                piece = inflater.decompress(pending, _INFLATE_PIECE)
                pending = inflater.unconsumed_tail
                if not piece and not pending:
                    break  # the input is spent short of the end: truncated
                body += piece
                if len(body) > max_bytes:
                    raise PayloadTooLargeError(
                        f"upload inflates beyond the {max_bytes} byte limit",
                        limit_bytes=max_bytes,
                    )
            if not inflater.eof:
                raise InvalidInputError("gzip body is truncated")
            pending = inflater.unused_data
            if not pending:
                return body
    except zlib.error as exc:
        raise InvalidInputError(f"gzip body is corrupt: {exc}") from None


_NOT_SPACE = re.compile(rb"\S")


@dataclass(frozen=True, slots=True)
class UploadSequence:
    """The uploads of a sequence's body, found (and counted) before any is applied.

    Each is copied out of the body only when its turn comes, so the body and one upload
    are held at a time; a body of one line is its upload, with no copy at all.
    """

    body: bytes | bytearray
    spans: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[bytes | bytearray]:
        if len(self.spans) == 1 and self.spans[0] == (0, len(self.body)):
            yield self.body
            return
        for start, end in self.spans:
            yield self.body[start:end]


def sequence_items(
    body: bytes | bytearray, max_uploads: int = MAX_SEQUENCE_UPLOADS
) -> UploadSequence:
    """The uploads of a sequence: one JSON document a line (NDJSON), the last newline optional.

    Each line is exactly the body its upload would have alone, so its digest (and so its
    idempotent replay) is the same however it is sent.  JSON text never holds a raw
    newline, so the lines are the documents.  The lines are counted before they are
    found, so a body of empty lines costs no memory; a line that is not an upload is
    refused when its turn comes, after the lines before it were applied.
    """
    if not body:
        raise _reject("the sequence holds no uploads: send one JSON document a line")
    ended = body.endswith(b"\n")
    count = body.count(b"\n") + (0 if ended else 1)
    if count > max_uploads:
        raise PayloadTooLargeError(
            f"the sequence holds {count} lines; at most {max_uploads} uploads in one request",
            limit_uploads=max_uploads,
        )
    spans, start = [], 0
    for index in range(count):
        end = body.find(b"\n", start)
        end = len(body) if end < 0 else end
        if _NOT_SPACE.search(body, start, end) is None:  # searched in place: no copy
            raise _reject(f"line {index + 1} of the sequence is blank: one upload a line")
        spans.append((start, end))
        start = end + 1
    return UploadSequence(body, spans)


def _reject(
    detail: str, errors: list[FieldError] | None = None, error_count: int = 0
) -> UploadRejectedError:
    if errors is None:
        return UploadRejectedError(detail)
    shown = [e.as_dict() for e in errors[:MAX_REPORTED_ERRORS]]
    return UploadRejectedError(detail, errors=shown, error_count=max(error_count, len(errors)))


def _envelope(
    doc: Any, now: datetime
) -> tuple[str, Area, Literal["full", "delta"], datetime, list[Any], list[Any]]:
    if not isinstance(doc, dict):
        raise _reject("the body must be a JSON object")
    unknown = sorted(set(doc) - _ENVELOPE)
    if unknown:
        raise _reject(f"unknown member(s): {', '.join(unknown)}")
    try:
        batch_id = str(uuid.UUID(str(doc.get("batch_id"))))
    except ValueError:
        raise _reject("batch_id must be a UUID") from None
    try:
        area = get_area(str(doc.get("area")))
    except UnknownAreaError as exc:
        raise _reject(str(exc)) from None
    mode = doc.get("mode")
    if mode not in ("full", "delta"):
        raise _reject('mode must be "full" or "delta"')
    extracted_at = parse_instant(doc.get("extracted_at"))
    if extracted_at is None:
        raise _reject("extracted_at must be an RFC 3339 time with an offset")
    if extracted_at > now + ALLOWED_CLOCK_SKEW:
        raise _reject(f"extracted_at {doc['extracted_at']} is in the future")
    records, deleted = doc.get("records", []), doc.get("deleted", [])
    if not isinstance(records, list) or not isinstance(deleted, list):
        raise _reject("records and deleted must be lists")
    if mode == "full" and deleted:
        raise _reject('a "full" upload replaces the area: send no "deleted" list')
    return batch_id, area, mode, extracted_at, records, deleted


def parse_upload(
    body: bytes | bytearray,
    now: datetime,
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_values: int = DEFAULT_MAX_VALUES,
) -> Upload:
    # Counted on the bytes: a body of tiny values would parse to many times its size.
    if too_many_values(body, max_values):
        raise PayloadTooLargeError(
            f"upload holds more than {max_values} JSON values", limit_values=max_values
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _reject(f"the body is not JSON: {exc}") from None
    batch_id, area, mode, extracted_at, records, deleted = _envelope(doc, now)
    if len(records) + len(deleted) > max_records:
        raise PayloadTooLargeError(
            f"upload holds {len(records)} records and {len(deleted)} deleted ids; "
            f"at most {max_records} in all",
            limit_records=max_records,
        )
    errors: list[FieldError] = []
    error_count = 0  # every error is counted; only the first few are kept
    seen: set[str] = set()
    # The whole batch checked in C first: nearly every upload is valid, and then only its
    # ids need a look.  Otherwise each record is checked again, to say what is wrong.
    if records_pass(area, records):
        seen = {record["id"] for record in records}
    if len(seen) != len(records):  # an invalid record, or an id twice
        seen = set()
        for index, record in enumerate(records):
            if not record_is_valid(area, record):  # the quick test first: most records pass
                for found in validate_record(area, index, record):
                    error_count += 1
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append(found)
            record_id = record.get("id") if isinstance(record, dict) else None
            if isinstance(record_id, str):
                if record_id in seen:
                    error_count += 1
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append(
                            FieldError(index, record_id, "id", "duplicate id in this upload")
                        )
                seen.add(record_id)
    for index, record_id in enumerate(deleted):
        error: FieldError | None = None
        if not is_valid_record_id(record_id):
            error = FieldError(index, None, "deleted", "not a valid record id")
        elif record_id in seen:
            error = FieldError(index, record_id, "deleted", "id is also in records")
        if error is not None:
            error_count += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(error)
    if errors:
        first = errors[0]
        where = f"record {first.index}" + (f" ({first.record_id})" if first.record_id else "")
        raise _reject(
            f"{error_count} problem(s); first: {where} field {first.field!r}: {first.message}",
            errors,
            error_count,
        )
    limit = DEFAULT_LIMIT
    if "deletion_limit" in doc:
        parsed = parse_limit(doc["deletion_limit"])
        if parsed is None:
            raise _reject("deletion_limit: expected {max_share: 0..1, max_count: >= 0}")
        limit = parsed
    return Upload(batch_id, area, mode, extracted_at, records, [str(d) for d in deleted], limit)
