"""The `csv` MIS adapter: a folder of CSV exports, one file per area.

The format and the mapping file are documented in `agents/mis/CSV_FORMAT.md`.  Values are
converted by the catalogue type of the field they map to.  A row that cannot be read (a
value that does not convert, more values than columns, no id) quarantines that record
only: it is left out and reported by id, field and kind of problem (never the value: it
may be personal), and `agents.extract` keeps what the broker holds for its id.  A fault of
the whole file (a header without the id column, bad UTF-8) fails only that file's area.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agents.mis import csv_imports
from agents.mis.base import (
    AdapterError,
    AreaRead,
    Quarantined,
    Record,
    WriteOutcome,
    WriteRecord,
)
from agents.mis.dates import DEFAULT_DATE_FORMAT, month_first_seen, read_date
from consent.areas import CATALOGUE, FieldSpec, FieldType, parse_instant

_TRUE: Final = frozenset({"true", "yes", "y", "1", "t"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "f"})
_TIME: Final = re.compile(r"^(\d{1,2}):(\d{2})(?::\d{2})?$")
_COMPACT_ITEM: Final = re.compile(r"^\s*([a-z]+)\s*:\s*(.+?)\s*$")
_ENCODING: Final = "utf-8-sig"  # Excel writes a byte-order mark


@dataclass(frozen=True, slots=True)
class AreaMapping:
    """How one area's file is read: which file, which column is the id, renamed columns."""

    file: str
    id_column: str = "id"
    columns: Mapping[str, str] = field(default_factory=dict)  # CSV column -> field
    delimiter: str = ","

    def field_for(self, column: str) -> str:
        return self.columns.get(column, column)


def default_mapping(area: str) -> AreaMapping:
    return AreaMapping(file=f"{area}.csv")


def load_mapping(path: Path) -> dict[str, AreaMapping]:
    """Read a mapping file (TOML); errors name the file and the key."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read the mapping file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AdapterError(f"{path}: not valid TOML: {exc}") from None
    areas = document.get("areas", {})
    if set(document) - {"areas"} or not isinstance(areas, dict):
        raise AdapterError(f'{path}: expected only [areas."AREA"] tables')
    return {area: _area_mapping(path, area, table) for area, table in areas.items()}


def _area_mapping(path: Path, area: str, table: Any) -> AreaMapping:
    where = f'{path}: [areas."{area}"]'
    spec = CATALOGUE.get(area)
    if spec is None:
        raise AdapterError(f"{where}: not a catalogue area")
    if not isinstance(table, dict) or set(table) - {"file", "id", "columns", "delimiter"}:
        raise AdapterError(f"{where}: keys are file, id, delimiter and [columns]")
    columns = table.get("columns", {})
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise AdapterError(f'{where}.columns: expected "CSV column" = "field" pairs')
    for column, name in columns.items():
        if name not in spec.field_index:
            raise AdapterError(f"{where}.columns: {column!r} maps to unknown field {name!r}")
    delimiter = table.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise AdapterError(f"{where}.delimiter: expected one character")
    return AreaMapping(
        file=str(table.get("file", f"{area}.csv")),
        id_column=str(table.get("id", "id")),
        columns=dict(columns),
        delimiter=delimiter,
    )


Column = tuple[int, str, Callable[[str], Any]]  # position, field, converter


class CsvMis:
    """`MisAdapter` over a folder of CSV files; an area is available when its file is."""

    name: str

    def __init__(
        self,
        directory: Path,
        mapping: Mapping[str, AreaMapping] | None = None,
        *,
        date_format: str = DEFAULT_DATE_FORMAT,
    ) -> None:
        self.name = "csv"
        self.directory = directory
        self.date_format = date_format
        self._mapping = dict(mapping or {})

    def mapping(self, area: str) -> AreaMapping:
        return self._mapping.get(area) or default_mapping(area)

    def write_areas(self) -> frozenset[str]:
        return csv_imports.WRITABLE

    def apply_write(
        self, area: str, write_id: str, records: list[WriteRecord]
    ) -> Iterator[WriteOutcome]:
        if area not in csv_imports.WRITABLE:
            raise AdapterError(f"the CSV adapter cannot write {area}")
        return csv_imports.write_import(self.directory, area, write_id, records)

    def _path(self, area: str) -> Path | None:
        """The area's file; its name is matched without case (`Students.Basic.csv`)."""
        wanted = self.mapping(area).file
        exact = self.directory / wanted
        if exact.is_file():
            return exact
        if not self.directory.is_dir():
            return None
        return next(
            (
                p
                for p in sorted(self.directory.iterdir())
                if p.name.lower() == wanted.lower() and p.is_file()
            ),
            None,
        )

    def areas(self) -> frozenset[str]:
        return frozenset(a for a in CATALOGUE if self._path(a) is not None)

    def extract(self, area: str) -> Iterator[Record]:
        return iter(self.read(area).records)

    def read(self, area: str) -> AreaRead:
        spec = CATALOGUE.get(area)
        if spec is None:
            raise AdapterError(f"area {area!r} is not in the catalogue")
        mapping = self.mapping(area)
        path = self._path(area)
        if path is None:
            raise AdapterError(f"area {area!r}: no export file {mapping.file}")
        return self._read(path, mapping, spec.field_index)

    def _read(self, path: Path, mapping: AreaMapping, fields: Mapping[str, FieldSpec]) -> AreaRead:
        try:
            with path.open(encoding=_ENCODING, newline="") as handle:
                reader = csv.reader(handle, delimiter=mapping.delimiter)
                header = next(reader, None)
                rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
        except UnicodeDecodeError:
            raise AdapterError(f"{path.name}: not UTF-8 text") from None
        except csv.Error as exc:
            raise AdapterError(f"{path.name}: malformed CSV: {exc}") from None
        out = AreaRead()
        if header is None:
            return out
        columns = self._columns(path, header, mapping, fields, rows)
        id_position = next(p for p, name, _ in columns if name == "id")
        for line, row in rows:
            where = f"{path.name}:{line}"
            cell = row[id_position].strip() if id_position < len(row) else ""
            record_id = cell or None
            if len(row) > len(header):
                problem = f"{len(row)} values for {len(header)} columns"
                out.quarantined.append(Quarantined(record_id, "", problem, where))
            elif record_id is None:
                out.quarantined.append(Quarantined(None, "id", "empty id", where))
            else:
                try:
                    out.records.append(self._record(row, columns, header))
                except _BadValue as bad:
                    out.quarantined.append(Quarantined(record_id, bad.field, bad.problem, where))
        return out

    def _columns(
        self,
        path: Path,
        header: list[str],
        mapping: AreaMapping,
        fields: Mapping[str, FieldSpec],
        rows: list[tuple[int, list[str]]],
    ) -> list[Column]:
        """(position, output name, converter) for each column we keep; extra columns go."""
        names = [h.strip() for h in header]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise AdapterError(f"{path.name}: column {duplicated[0]!r} appears twice")
        if mapping.id_column not in names:
            raise AdapterError(f"{path.name}: no id column {mapping.id_column!r}")
        kept: list[Column] = []
        for position, column in enumerate(names):
            if column == mapping.id_column:
                kept.append((position, "id", str.strip))
                continue
            spec = fields.get(mapping.field_for(column))
            if spec is None:
                continue
            if spec.type is FieldType.DATE:
                # The whole column tells whether its slashed dates may be US order (auto).
                cells = (r[position] for _, r in rows if position < len(r))
                kept.append((position, spec.name, self._date_reader(month_first_seen(cells))))
            else:
                kept.append((position, spec.name, self._converter(spec)))
        return kept

    def _date_reader(self, us_column: bool) -> Callable[[str], str]:
        return lambda text: read_date(text, self.date_format, us_column=us_column)

    @staticmethod
    def _record(row: list[str], columns: list[Column], header: list[str]) -> Record:
        record: Record = {}
        for position, name, convert in columns:
            text = row[position].strip() if position < len(row) else ""
            try:
                record[name] = convert(text) if text else None
            except ValueError as exc:
                raise _BadValue(name, str(exc)) from None
        return record

    def _converter(self, spec: FieldSpec) -> Callable[[str], Any]:
        if spec.type is FieldType.BINARY:
            return self._binary
        if spec.type is FieldType.OBJECT_LIST:
            return lambda text: object_list(spec, text)
        return CONVERTERS[spec.type]

    def _binary(self, text: str) -> str:
        """Base64 text, or the name of a file in the export folder (a photo)."""
        photo = self._file_in_folder(text)
        if photo is not None:
            return base64.b64encode(photo.read_bytes()).decode("ascii")
        try:
            base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("expected base64 text or a file in the export folder") from None
        return text

    def _file_in_folder(self, text: str) -> Path | None:
        if len(text) > 255 or not text.lower().endswith((".jpg", ".jpeg", ".png")):
            return None
        try:
            candidate = (self.directory / text).resolve()
            inside = candidate.is_relative_to(self.directory.resolve())
            return candidate if inside and candidate.is_file() else None
        except OSError:
            return None


class _BadValue(Exception):
    def __init__(self, field_: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field_, problem


def to_date(text: str) -> str:
    """A date as the `uk` format reads it: ISO, ISO date-time or day-first."""
    return read_date(text, "uk")


def to_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true/false, yes/no, y/n or 1/0")


def to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None


def to_number(text: str) -> float:
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def to_time(text: str) -> str:
    match = _TIME.match(text)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError("expected a time HH:MM")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def to_instant(text: str) -> str:
    if parse_instant(text) is None:
        raise ValueError("expected an RFC 3339 time with an offset")
    return text


def to_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def object_list(spec: FieldSpec, text: str) -> list[dict[str, Any]]:
    """A JSON array of objects; phones and emails also as `type:value; type:value`."""
    if text.startswith("["):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("expected a JSON array of objects") from None
        if not isinstance(loaded, list) or not all(isinstance(i, dict) for i in loaded):
            raise ValueError("expected a JSON array of objects")
        return loaded
    value_key = {"phones": "number", "emails": "address"}.get(spec.name)
    if value_key is None:
        raise ValueError("expected a JSON array of objects")
    items = []
    for position, part in enumerate(p for p in text.split(";") if p.strip()):
        match = _COMPACT_ITEM.match(part)
        if match is None:
            raise ValueError("expected type:value items separated by ;")
        items.append({"type": match.group(1), value_key: match.group(2), "primary": position == 0})
    return items


CONVERTERS: Final[Mapping[FieldType, Callable[[str], Any]]] = {
    FieldType.STRING: str,
    FieldType.DATE: to_date,
    FieldType.INSTANT: to_instant,
    FieldType.TIME: to_time,
    FieldType.BOOLEAN: to_bool,
    FieldType.INTEGER: to_int,
    FieldType.NUMBER: to_number,
    FieldType.STRING_LIST: to_list,
}
