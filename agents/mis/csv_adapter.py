"""The `csv` MIS adapter: a folder of CSV exports, one file per area.

The format and the mapping file are documented in `agents/mis/CSV_FORMAT.md`.  Values are
converted by the catalogue type of the field they map to; a value that cannot be is an
`AdapterError` naming the file, line and column (never the value: it may be personal).
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
from datetime import date
from pathlib import Path
from typing import Any, Final

from agents.mis.base import AdapterError, Record
from consent.areas import CATALOGUE, FieldSpec, FieldType, parse_instant

_TRUE: Final = frozenset({"true", "yes", "y", "1", "t"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "f"})
_UK_DATE: Final = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
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


class CsvMis:
    """`MisAdapter` over a folder of CSV files; an area is available when its file is."""

    name: str

    def __init__(self, directory: Path, mapping: Mapping[str, AreaMapping] | None = None) -> None:
        self.name = "csv"
        self.directory = directory
        self._mapping = dict(mapping or {})

    def mapping(self, area: str) -> AreaMapping:
        return self._mapping.get(area) or default_mapping(area)

    def areas(self) -> frozenset[str]:
        return frozenset(a for a in CATALOGUE if (self.directory / self.mapping(a).file).is_file())

    def extract(self, area: str) -> Iterator[Record]:
        spec = CATALOGUE.get(area)
        if spec is None:
            raise AdapterError(f"area {area!r} is not in the catalogue")
        mapping = self.mapping(area)
        path = self.directory / mapping.file
        if not path.is_file():
            raise AdapterError(f"area {area!r}: no export file {mapping.file}")
        return iter(list(self._read(path, mapping, spec.field_index)))

    def _read(
        self, path: Path, mapping: AreaMapping, fields: Mapping[str, FieldSpec]
    ) -> Iterator[Record]:
        try:
            with path.open(encoding=_ENCODING, newline="") as handle:
                reader = csv.reader(handle, delimiter=mapping.delimiter)
                header = next(reader, None)
                if header is None:
                    return
                columns = self._columns(path, header, mapping, fields)
                for row in reader:
                    record = self._record(path, reader.line_num, row, columns, header)
                    if record is not None:
                        yield record
        except UnicodeDecodeError:
            raise AdapterError(f"{path.name}: not UTF-8 text") from None
        except csv.Error as exc:
            raise AdapterError(f"{path.name}: malformed CSV: {exc}") from None

    def _columns(
        self, path: Path, header: list[str], mapping: AreaMapping, fields: Mapping[str, FieldSpec]
    ) -> list[tuple[int, str, Callable[[str], Any]]]:
        """(position, output name, converter) for each column we keep; extra columns go."""
        names = [h.strip() for h in header]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise AdapterError(f"{path.name}: column {duplicated[0]!r} appears twice")
        if mapping.id_column not in names:
            raise AdapterError(f"{path.name}: no id column {mapping.id_column!r}")
        kept: list[tuple[int, str, Callable[[str], Any]]] = []
        for position, column in enumerate(names):
            if column == mapping.id_column:
                kept.append((position, "id", str.strip))
                continue
            spec = fields.get(mapping.field_for(column))
            if spec is not None:
                kept.append((position, spec.name, self._converter(spec)))
        return kept

    def _record(
        self,
        path: Path,
        line: int,
        row: list[str],
        columns: list[tuple[int, str, Callable[[str], Any]]],
        header: list[str],
    ) -> Record | None:
        if not any(cell.strip() for cell in row):
            return None
        if len(row) > len(header):
            raise AdapterError(f"{path.name}:{line}: {len(row)} values for {len(header)} columns")
        record: Record = {}
        for position, name, convert in columns:
            text = row[position].strip() if position < len(row) else ""
            try:
                record[name] = convert(text) if text else None
            except ValueError as exc:
                raise AdapterError(
                    f"{path.name}:{line}: column {header[position].strip()!r}: {exc}"
                ) from None
        if not record.get("id"):
            raise AdapterError(f"{path.name}:{line}: empty id")
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


def to_date(text: str) -> str:
    uk = _UK_DATE.match(text)
    try:
        if uk:
            day, month, year = (int(g) for g in uk.groups())
            return date(year, month, day).isoformat()
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise ValueError("expected a date YYYY-MM-DD or DD/MM/YYYY")


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
