"""The CSV adapter's write port: each write becomes one CSV file in `imports/`.

The school's MIS import tool picks these files up; the agent reports a record `applied`
once its write's file is durably in place (written to a temporary name, fsynced, renamed,
and the directory fsynced), so a crash leaves either no file or the whole file.  The file
is named after the write, so a write applied again after a crash finds its file and
writes nothing twice.  The MIS assigns its ids on import: none are known here.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from agents.mis.base import WriteOutcome, WriteRecord
from consent.areas import CATALOGUE

WRITABLE: Final = frozenset({"attendance.marks", "behaviour"})
IMPORTS_DIR: Final = "imports"
KEY_COLUMN: Final = "idempotency_key"


def import_file(directory: Path, area: str, write_id: str) -> Path:
    return directory / IMPORTS_DIR / f"{area}-{write_id}.csv"


def write_import(
    directory: Path, area: str, write_id: str, records: list[WriteRecord]
) -> Iterator[WriteOutcome]:
    target = import_file(directory, area, write_id)
    if not target.exists():
        _write_durably(target, _render(area, records))
    for item in records:
        yield WriteOutcome(item.index, "applied", None)


def _render(area: str, records: list[WriteRecord]) -> bytes:
    columns = [KEY_COLUMN, *CATALOGUE[area].field_names]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for item in records:
        row = {k: ("" if v is None else v) for k, v in item.record.items()}
        writer.writerow({**row, KEY_COLUMN: item.key})
    return out.getvalue().encode("utf-8")


def _write_durably(target: Path, body: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
