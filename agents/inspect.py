"""What `misbroker-agent check` reports about the MIS: every area read, nothing uploaded.

A bundle that reads as no areas at all (a folder holding something else), an area that
fails, or a source holding several schools with none chosen makes the check fail: the
technician setting the agent up must see it then, not after a night of failed uploads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.extract import check
from agents.mis.base import AdapterError, MisAdapter, read_area


@dataclass(slots=True)
class MisReport:
    described: dict[str, Any] = field(default_factory=dict)  # the adapter's own account
    areas: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"source": self.described, "areas": self.areas, "problems": self.problems}


def inspect_mis(adapter: MisAdapter) -> MisReport:
    """Read every area the adapter offers: counts, quarantined records, failures."""
    report = MisReport()
    describe = getattr(adapter, "describe", None)
    if callable(describe):
        try:
            report.described = describe()
        except AdapterError as exc:
            report.problems.append(str(exc))
    if report.described.get("school_error"):
        report.problems.append(str(report.described["school_error"]))
    try:
        areas = sorted(adapter.areas())
    except AdapterError as exc:
        report.problems.append(str(exc))
        return report
    if not areas:
        report.problems.append("the MIS source provides no area (wrong folder or files?)")
    for area in areas:
        try:
            read = read_area(adapter, area)
        except AdapterError as exc:
            report.areas[area] = {"error": str(exc)}
            report.problems.append(f"{area}: {exc}")
            continue
        checked = check(area, read.records, quarantined=read.quarantined)
        report.areas[area] = {
            "records": checked.accepted,
            "quarantined": len(checked.quarantined),
            "quarantined_records": [q.as_json() for q in checked.quarantined[:20]],
        }
    return report
