"""The agent's copy of a OneRoster export, so that a delta bundle has something to change.

A delta bundle (manifest `file.users,delta`) holds only the rows that changed since the
last export, each with its `status` (`active`, `tobedeleted`) and `dateLastModified`.  A
catalogue record is built from several files (a pupil from users.csv, demographics.csv,
enrollments.csv and classes.csv), so the changed rows alone cannot make records: a pupil
whose birth date did not change has no demographics row in the delta.  The adapter
therefore keeps the roster as last read in the agent's state folder (which already holds
the outbox, so no new kind of data lands there):

- a bulk bundle replaces the copy, file by file, except a file that cannot be read (a bad
  header, bad UTF-8, malformed CSV, a users.csv with only its header, a missing orgs.csv
  or users.csv): the copy keeps the last good one;
- a delta bundle changes the copy row by row, by `sourcedId`: a `tobedeleted` row removes
  it, any other row replaces it or is added, an absent row stays as it was.  A row older
  than the copy's (`dateLastModified`) is not applied, so reading the same delta again, or
  an older one, changes nothing;
- the adapter then reads the copy like a bulk bundle, and the agent sends what changed as
  delta uploads (see `OneRosterMis`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from agents.mis.base import AdapterError

REQUIRED: Final = frozenset({"orgs.csv", "users.csv"})


class Files(Protocol):
    """A bundle's files (`agents.mis.oneroster.Source`)."""

    def files(self) -> dict[str, str]: ...

    def text(self, member: str) -> str: ...


class Unreadable(AdapterError):
    """A file of the bundle that cannot be read as a whole."""


def parse(name: str, text: str) -> tuple[list[str], list[list[str]]]:
    """A file's header and raw rows (blank lines dropped); `Unreadable` for a broken file."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        rows = [values for values in reader if any(v.strip() for v in values)]
    except csv.Error as exc:
        raise Unreadable(f"{name}: malformed CSV: {exc}") from None
    if header and "sourcedId" not in header:
        raise Unreadable(f"{name}: no sourcedId column")
    return header, rows


def render(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


class Roster:
    """The export as last read: one CSV file per OneRoster file, names in lower case."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def ready(self) -> bool:
        """Whether a bulk export was read: a delta needs its orgs and users."""
        return all((self.folder / name).is_file() for name in REQUIRED)

    def names(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        return {p.name for p in self.folder.iterdir() if p.suffix == ".csv"}

    def remember(self, bundle: Files) -> None:
        """After reading a bulk bundle: it becomes the copy, but for its unreadable files."""
        present = _csv_files(bundle)
        for name, member in present.items():
            try:
                text = bundle.text(member)
                _check_bulk(name, text)
            except AdapterError:
                continue  # the reader reports it; the copy keeps the last good one
            self._write(name, text)
        for name in self.names() - present.keys() - REQUIRED:
            (self.folder / name).unlink(missing_ok=True)  # a bulk export without it has none

    def apply(self, bundle: Files, modes: Mapping[str, str]) -> dict[str, str]:
        """Apply a delta bundle; the faults of its files that could not be, by file name.

        `modes` are the manifest's `file.*` values by file name.  A file in the bundle that
        the manifest does not name is merged as a delta: merging a bulk file by mistake
        only fails to delete, while replacing with a delta file would thin the roster out.
        """
        faults: dict[str, str] = {}
        for name, member in _csv_files(bundle).items():
            mode = modes.get(name, "delta")
            if mode == "absent":
                continue
            try:
                text = bundle.text(member)
                if mode == "bulk":
                    _check_bulk(name, text)
                    self._write(name, text)
                else:
                    self._write(name, self._merged(name, text))
            except (AdapterError, OSError) as exc:
                faults[name] = str(exc)  # isolation per file: only its areas fail
        return faults

    def _merged(self, name: str, delta_text: str) -> str:
        path = self.folder / name
        base_text = path.read_text(encoding="utf-8") if path.is_file() else ""
        base_header, base_rows = parse(name, base_text)
        delta_header, delta_rows = parse(name, delta_text)
        header = base_header + [c for c in delta_header if c not in base_header]
        rows = {_key(base_header, r, n): r for n, r in enumerate(base_rows)}
        for values in delta_rows:
            if len(values) > len(delta_header):
                # Kept as it is: the adapter quarantines it, and the broker keeps the record.
                rows[_key(delta_header, values, -1)] = values
                continue
            row = dict(zip(delta_header, (v.strip() for v in values), strict=False))
            record_id = row.get("sourcedId", "")
            if not record_id:
                continue  # no id: nothing it could change
            old = rows.get(record_id)
            if old is not None and _older(row, dict(zip(header, old, strict=False))):
                continue
            if row.get("status", "").lower() == "tobedeleted":
                rows.pop(record_id, None)
            else:
                rows[record_id] = [row.get(column, "") for column in header]
        return render(header, list(rows.values()))

    def _write(self, name: str, text: str) -> None:
        path = self.folder / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)  # a crash leaves the old file or the new one, never half


def _csv_files(bundle: Files) -> dict[str, str]:
    return {
        name: member
        for name, member in bundle.files().items()
        if name.endswith(".csv") and name != "manifest.csv"
    }


def _check_bulk(name: str, text: str) -> None:
    _, rows = parse(name, text)
    if name == "users.csv" and not rows:
        raise Unreadable("users.csv holds no users (only a header)")


def _key(header: list[str], values: list[str], index: int) -> str:
    try:
        record_id = values[header.index("sourcedId")].strip()
    except (ValueError, IndexError):
        record_id = ""
    return record_id or f"\0row {index}"  # a row without an id is kept apart, as it is


def _older(new: Mapping[str, str], old: Mapping[str, str]) -> bool:
    """True when `new` was last modified before `old` (unknown times never are)."""
    new_at = _instant(new.get("dateLastModified", ""))
    old_at = _instant(old.get("dateLastModified", ""))
    return new_at is not None and old_at is not None and new_at < old_at


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
