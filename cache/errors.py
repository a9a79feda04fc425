"""Errors of the cache context, each with the HTTP status and problem slug the API maps it to.

The cache does not import the broker, so these mirror `broker.errors.DomainError`'s class
attributes instead of subclassing it.  Crypto failures (`cache.crypto.IntegrityError`,
`cache.keys.KeyShreddedError`) are deliberately not here: they are never a client's fault
and must surface as server errors, with no data returned.
"""

from __future__ import annotations

from typing import ClassVar


class CacheError(Exception):
    status: ClassVar[int] = 500
    slug: ClassVar[str] = "cache-error"
    title: ClassVar[str] = "Cache error"


class NotCachedError(CacheError):
    """The area was never cached: the API answers 202 and queues an extraction."""

    status = 202
    slug = "fetching"
    title = "Data is being fetched"


class StaleUploadError(CacheError):
    """An upload extracted before the data already cached: refused, nothing applied."""

    status = 409
    slug = "stale-upload"
    title = "Upload older than cached data"


class InvalidBatchError(CacheError):
    """A batch the ingest validation should have refused (missing or repeated ids)."""

    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class InvalidCursorError(CacheError):
    """A cursor that is malformed, tampered, from another area, or from a purged snapshot."""

    status = 400
    slug = "invalid-cursor"
    title = "Invalid cursor"


class UnknownFieldError(CacheError):
    status = 400
    slug = "unknown-field"
    title = "Unknown field"


class ColdBlobMissingError(CacheError):
    """An area marked cold whose bundle is gone from the blob store."""
