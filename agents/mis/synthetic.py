"""The `synthetic` MIS adapter: a realistic, deterministic English school with no real MIS.

It stands in for SIMS, Arbor and the rest in development, demos and tests.  The school is
generated from a seed (same seed and parameters, byte-identical records) and can be moved
on day by day with `advance`, which admits and removes pupils, takes registers, logs
behaviour and changes contacts, so consecutive extractions differ the way a real MIS's do.

Everything personal is invented.  Phone numbers come from Ofcom's drama ranges and email
domains from RFC 2606 `example.*`, so a partner app fed this data cannot reach a person.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Final, Literal

from agents.mis._synthetic.build import build_world
from agents.mis._synthetic.daily import advance_day
from agents.mis._synthetic.render import RENDERERS
from agents.mis._synthetic.writes import WRITABLE, WriteStore
from agents.mis.base import AdapterError, Record, WriteOutcome, WriteRecord
from agents.mis.identifiers import is_valid_upn, upn_check_letter
from consent.areas import CATALOGUE

__all__ = ["MAX_PUPILS", "Phase", "SyntheticMis", "is_valid_upn", "upn_check_letter"]

Phase = Literal["primary", "secondary"]
MAX_PUPILS: Final = 10_000
_AREAS: Final = frozenset(RENDERERS)


class SyntheticMis:
    """A generated school that implements `MisAdapter` for every catalogue area."""

    name: str

    def __init__(
        self,
        seed: int,
        pupils: int,
        phase: Phase,
        school_name: str | None = None,
        dfe_number: str | None = None,
        day: date | None = None,
        marks_days: int = 5,
        write_store: Path | None = None,
    ) -> None:
        if phase not in ("primary", "secondary"):
            raise ValueError("phase is 'primary' or 'secondary'")
        if not 1 <= pupils <= MAX_PUPILS:
            raise ValueError(f"pupils is 1-{MAX_PUPILS}")
        if marks_days < 0:
            raise ValueError("marks_days is not negative")
        # A live MIS answers for today; callers wanting reproducible data pass `day`.
        today = day if day is not None else date.today()  # noqa: DTZ011
        self.name = "synthetic"
        self._world = build_world(seed, pupils, phase, school_name, dfe_number, today, marks_days)
        # What partners' writes put in this MIS (a file under the agent's state dir when
        # the agent runs it, so it survives restarts as a real MIS's database would).
        self.writes = WriteStore(write_store)

    @property
    def day(self) -> date:
        """The school day the MIS is currently at."""
        return self._world.day

    def areas(self) -> frozenset[str]:
        return _AREAS

    def extract(self, area: str) -> Iterator[Record]:
        renderer = RENDERERS.get(area)
        if renderer is None:
            known = "is not in the catalogue" if area not in CATALOGUE else "is not provided"
            raise AdapterError(f"area {area!r} {known} by the synthetic MIS")
        # Materialised so a later `advance` cannot change records a caller is still reading.
        rendered = list(renderer(self._world))
        if area in WRITABLE:
            rendered = self.writes.overlay(area, rendered)
        return iter(rendered)

    def write_areas(self) -> frozenset[str]:
        return WRITABLE

    def apply_write(
        self, area: str, write_id: str, records: list[WriteRecord]
    ) -> Iterator[WriteOutcome]:
        if area not in WRITABLE:
            raise AdapterError(f"the synthetic MIS cannot write {area}")
        return self.writes.apply(area, records)

    def advance(self, days: int = 1) -> None:
        """Move the school on `days` calendar days; weekends and holidays change less.

        Raises `AdapterError` if that would cross into the next academic year, which the
        synthetic school does not model (no promotion of year groups).
        """
        if days < 0:
            raise ValueError("days is not negative")
        for _ in range(days):
            advance_day(self._world)
