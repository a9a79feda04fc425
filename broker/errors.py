"""Domain errors carry their HTTP status and RFC 9457 problem type; one handler renders them.

Services raise these and never `HTTPException`; the CLI turns them into a one-line message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class DomainError(Exception):
    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    @property
    def type(self) -> str:
        return f"/problems/{self.slug}"


class InvalidInputError(DomainError):
    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class NotFoundError(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ConflictError(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class AuthenticationError(DomainError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class ForbiddenError(DomainError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class ServiceUnavailableError(DomainError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class PayloadTooLargeError(DomainError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class TooManyRequestsError(DomainError):
    status = 429
    slug = "too-many-requests"
    title = "Too many requests"
