"""The MIS adapter port: what the agent needs from any school MIS.

An adapter reads one school's MIS and yields records already shaped per `consent.areas`,
so everything downstream of it (diff, spool, upload) is MIS-agnostic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
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


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record left out because it is invalid: which one, which field, what kind of problem.

    Never the value: these reach telemetry, and a value may be personal data.  `record_id`
    is None only when the row has no usable id (it cannot be protected at the broker, but
    it is still reported by `where`).
    """

    record_id: str | None
    field: str
    problem: str
    where: str = ""  # file and line, when the adapter knows them

    def describe(self) -> str:
        shown = self.record_id if self.record_id is not None else "(no id)"
        place = f" at {self.where}" if self.where else ""
        return f"{shown} field {self.field!r}: {self.problem}{place}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "field": self.field,
            "problem": self.problem,
            "where": self.where or None,
        }


@dataclass(slots=True)
class AreaRead:
    """One area as read from the MIS: the good records and the quarantined ones."""

    records: list[Record] = dataclass_field(default_factory=list)
    quarantined: list[Quarantined] = dataclass_field(default_factory=list)
    # Rebuilt from a delta export applied to the adapter's copy of the MIS: sent as a delta,
    # never a full, so the broker loses an id only because the export deleted it.
    from_delta: bool = False
    # Some rows this area is built from were quarantined elsewhere (a pupil with an unknown
    # grade places in no year group): an id missing now may only be unreadable, so this run
    # deletes nothing of the area; the next clean export does.
    keep_absent: bool = False


@runtime_checkable
class QuarantiningAdapter(MisAdapter, Protocol):
    """An adapter that tells invalid records apart instead of failing the whole area."""

    def read(self, area: str) -> AreaRead:
        """Every record of `area`, valid ones and quarantined ones apart."""
        ...


def read_area(adapter: MisAdapter, area: str) -> AreaRead:
    """The area's records and quarantine, from any adapter (others quarantine nothing)."""
    if isinstance(adapter, QuarantiningAdapter):
        return adapter.read(area)
    return AreaRead(list(adapter.extract(area)))


# -- write-back ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One record of a partner's write, with the key that makes applying it idempotent.

    `key` is `<write_id>:<index>`: an adapter given a key it has already applied must not
    apply the record again, and answers as it did the first time.
    """

    key: str
    index: int
    record: Record


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What the MIS did with one record: `applied` (with its MIS id when known) or
    `rejected` (with an error naming the field and problem, never a value)."""

    index: int
    status: str  # "applied" | "rejected"
    mis_id: str | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "status": self.status, "mis_id": self.mis_id,
                "error": self.error}  # fmt: skip


@runtime_checkable
class WritingAdapter(MisAdapter, Protocol):
    """An adapter that can apply partners' writes to the MIS (the write port)."""

    def write_areas(self) -> frozenset[str]:
        """The catalogue areas this adapter can write (reported in the heartbeat)."""
        ...

    def apply_write(
        self, area: str, write_id: str, records: list[WriteRecord]
    ) -> Iterator[WriteOutcome]:
        """Apply `records`, yielding each outcome once it is durable in the MIS.

        Idempotent per `WriteRecord.key`: the agent calls again with the records it has no
        outcome for after a crash, and some of them may have been applied already.
        """
        ...


def write_areas(adapter: MisAdapter) -> frozenset[str]:
    """What `adapter` can write: nothing for an adapter without the write port."""
    return adapter.write_areas() if isinstance(adapter, WritingAdapter) else frozenset()
