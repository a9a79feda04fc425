"""The MIS adapter port: what the agent needs from any school MIS.

An adapter reads one school's MIS and yields records already shaped per `consent.areas`,
so everything downstream of it (diff, spool, upload) is MIS-agnostic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, TypeAlias, runtime_checkable

Record: TypeAlias = dict[str, Any]


class AdapterError(Exception):
    """The MIS could not be read, or was asked for something it does not provide."""


@runtime_checkable
class MisAdapter(Protocol):
    """One school's MIS, seen as a source of catalogue-shaped records."""

    name: str

    def areas(self) -> frozenset[str]:
        """The catalogue areas this adapter can extract."""
        ...

    def extract(self, area: str) -> Iterator[Record]:
        """Yield every record of `area`: a string `id` plus catalogue fields only.

        Raises `AdapterError` for an area outside `areas()` or when the MIS fails.
        """
        ...
