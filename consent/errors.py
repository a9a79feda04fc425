"""Errors of the consent context; the broker maps each `kind` to an HTTP problem."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeAlias

ErrorKind: TypeAlias = Literal["not_found", "conflict", "invalid", "unavailable"]


class ConsentError(Exception):
    kind: ClassVar[ErrorKind] = "invalid"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class ConsentNotFoundError(ConsentError):
    kind = "not_found"


class ConsentConflictError(ConsentError):
    """The consent's state forbids the action now (already ended, already suspended...)."""

    kind = "conflict"


class ConsentInvalidError(ConsentError):
    """The request breaks a consent rule (areas not requested, lengthening an end...)."""

    kind = "invalid"


class AccessLogWriteError(ConsentError):
    """An access-log entry could not be written, so the read it describes must fail."""

    kind = "unavailable"
