"""Build the configured MIS adapter from the `[mis]` table of the agent's config."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from agents.config import ConfigError, MisSettings
from agents.mis.base import AdapterError, MisAdapter
from agents.mis.dates import DATE_FORMATS, DEFAULT_DATE_FORMAT

_OPTIONS = {
    "synthetic": {
        "seed",
        "pupils",
        "phase",
        "school_name",
        "dfe_number",
        "day",
        "marks_days",
        "advance_days",
    },
    "csv": {"directory", "mapping_file", "date_format"},
    "oneroster": {"directory", "school", "date_format", "grades"},
}


def build_adapter(settings: MisSettings, state_dir: Path | None = None) -> MisAdapter:
    """The adapter named in the config; a bad option is a `ConfigError` naming it.

    `state_dir` is the agent's: the OneRoster adapter keeps its copy of the export there,
    so that it can read delta bundles.
    """
    options = settings.options
    unknown = sorted(set(options) - _OPTIONS[settings.adapter])
    if unknown:
        raise ConfigError(f"mis.{unknown[0]}: unknown option for the {settings.adapter} adapter")
    if settings.adapter == "synthetic":
        store = state_dir / "synthetic-mis.db" if state_dir is not None else None
        return _synthetic(options, store)
    date_format = _choice(options, "date_format", DATE_FORMATS, DEFAULT_DATE_FORMAT)
    if settings.adapter == "csv":
        from agents.mis.csv_adapter import CsvMis, load_mapping

        mapping_file = options.get("mapping_file")
        mapping = load_mapping(Path(mapping_file)) if mapping_file is not None else None
        return CsvMis(_directory(options), mapping, date_format=date_format)
    from agents.mis.oneroster import OneRosterMis, Options

    school = options.get("school")
    if isinstance(school, int) and not isinstance(school, bool):
        school = str(school)  # `school = 3024012` written without quotes
    if school is not None and (not isinstance(school, str) or not school.strip()):
        raise ConfigError("mis.school: expected the school's DfE number, URN or sourcedId")
    grades = options.get("grades", {})
    if not isinstance(grades, Mapping) or not all(isinstance(v, str) for v in grades.values()):
        raise ConfigError('mis.grades: expected a table of "grade" = "year group" pairs')
    chosen = Options.with_grades(school, date_format, {str(k): v for k, v in grades.items()})
    roster = state_dir / "oneroster" if state_dir is not None else None
    return OneRosterMis(_directory(options, zip_ok=True), chosen, roster=roster)


def _directory(options: Mapping[str, Any], *, zip_ok: bool = False) -> Path:
    value = options.get("directory")
    if not isinstance(value, str | Path):
        raise ConfigError("mis.directory: required (the folder of exported files)")
    path = Path(value)
    if zip_ok and path.is_file() and path.suffix.lower() == ".zip":
        return path
    if not path.is_dir():
        kind = "a folder or a .zip file" if zip_ok else "a folder"
        raise ConfigError(f"mis.directory: {path} is not {kind}")
    return path


def _choice(options: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = options.get(key, default)
    if value not in allowed:
        raise ConfigError(f"mis.{key}: expected one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _synthetic(options: Mapping[str, Any], write_store: Path | None) -> MisAdapter:
    from agents.mis.synthetic import SyntheticMis

    day = options.get("day")
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"mis.day: expected YYYY-MM-DD, got {day!r}") from None
    if day is not None and not isinstance(day, date):
        raise ConfigError("mis.day: expected a date")
    try:
        mis = SyntheticMis(
            seed=_int(options, "seed", 1),
            pupils=_int(options, "pupils", 600),
            phase=options.get("phase", "secondary"),
            school_name=options.get("school_name"),
            dfe_number=options.get("dfe_number"),
            day=day,
            marks_days=_int(options, "marks_days", 5),
            write_store=write_store,
        )
        mis.advance(_int(options, "advance_days", 0))
    except (ValueError, AdapterError) as exc:
        raise ConfigError(f"mis: {exc}") from None
    return mis


def _int(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"mis.{key}: expected a whole number")
    return value
