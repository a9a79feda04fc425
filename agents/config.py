"""The agent's configuration: a TOML file, plus overrides the broker sent with `configure`.

Every problem is one line naming the key (`ConfigError`; the CLI exits 2).  The agent key
is wrapped in `Secret` so that no repr, log line or error message can carry it.

Example (paths are relative to the file)::

    broker_url = "https://broker.example.org"
    agent_key_file = "agent.key"          # or agent_key = "..."
    state_dir = "state"
    heartbeat_seconds = 60
    timezone = "Europe/London"            # optional; the system's zone otherwise

    [tls]
    ca_file = "ca.pem"                    # optional; the system's trust store otherwise

    [upload]
    max_batch_bytes = 8388608             # largest upload body (JSON, uncompressed)
    batches_per_request = 32              # small batches sent together; 1: one a request
    max_deletion_share = 0.10             # hold an upload deleting more than this share
    max_deletion_count = 5                # ... and more than this many records of an area

    [mis]
    adapter = "csv"                       # synthetic | csv | oneroster
    directory = "exports"
    mapping_file = "mapping.toml"         # csv only, optional
    date_format = "auto"                  # csv and oneroster: iso | uk | auto
    school = "3024012"                    # oneroster: DfE number, URN or sourcedId
    max_invalid_share = 0.10              # hold an area with more invalid records than this
    max_invalid_count = 5                 # ... and more than this many

    [schedules]
    weekly_full_day = "sunday"
    nightly = { start = "01:00", end = "06:00" }
    attendance = { every_minutes = 30, start = "08:00", end = "16:30" }
    behaviour = { every_minutes = 60, start = "08:00", end = "17:00" }
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from agents.deletion_guard import DEFAULT_MAX_COUNT, DEFAULT_MAX_SHARE, DeletionLimit
from agents.quarantine import (
    DEFAULT_INVALID_LIMIT,
    DEFAULT_MAX_INVALID_COUNT,
    DEFAULT_MAX_INVALID_SHARE,
    InvalidLimit,
)
from consent.areas import CATALOGUE, CORE_AREAS

OVERRIDES_FILE: Final = "overrides.json"
# What the broker may change remotely (`configure`); the rest needs someone at the school.
CONFIGURABLE_KEYS: Final = frozenset({"schedules", "heartbeat_seconds"})
WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ADAPTERS: Final = ("synthetic", "csv", "oneroster")
ATTENDANCE_AREAS: Final = ("attendance.marks", "students.attendance_summary")
BEHAVIOUR_AREAS: Final = ("behaviour",)
# 8 MiB holds the largest record the catalogue allows (a 5 MiB photo is ~7 MiB of base64)
# and stays well under the broker's default limits (64 MiB inflated, 32 MiB as sent).
DEFAULT_MAX_BATCH_BYTES: Final = 8 * 1024 * 1024
DEFAULT_HEARTBEAT_SECONDS: Final = 60
MIN_BATCH_BYTES: Final = 1024  # the broker's own floor for its upload limit
MAX_BATCH_BYTES: Final = 64 * 1024 * 1024  # a default broker refuses anything larger
DEFAULT_BATCHES_PER_REQUEST: Final = 32
MAX_BATCHES_PER_REQUEST: Final = 256  # the broker's limit for one sequence
_TOP_KEYS: Final = frozenset(
    {
        "broker_url",
        "agent_key",
        "agent_key_file",
        "state_dir",
        "heartbeat_seconds",
        "timezone",
        "tls",
        "mis",
        "schedules",
        "upload",
    }
)


class ConfigError(ValueError):
    """The configuration cannot be used; the message is one line naming the key."""


class Secret:
    """A string that never shows itself in a repr, str or format."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def jitter_seed(self) -> int:
        """A stable number per key, so each school gets its own place in the night window."""
        digest = hashlib.blake2b(self._value.encode(), digest_size=8, person=b"mb-jitter")
        return int.from_bytes(digest.digest(), "big")

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class NightlySchedule:
    start: time
    end: time
    areas: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeriodicSchedule:
    every_minutes: int  # 0 turns the schedule off
    start: time
    end: time
    weekdays_only: bool
    areas: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Schedules:
    nightly: NightlySchedule
    attendance: PeriodicSchedule
    behaviour: PeriodicSchedule
    weekly_full_day: int  # 0 is Monday, as `date.weekday()`


@dataclass(frozen=True, slots=True)
class UploadSettings:
    timeout_seconds: float = 60.0
    retry_cap_seconds: float = 300.0  # the longest wait between two tries
    retry_budget_seconds: float = 600.0  # how long one flush keeps trying before moving on
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES  # larger uploads are cut into batches
    # Batches sent in one request (`POST /v1/agent/uploads/sequence`), as many as fit in
    # `max_batch_bytes` together: a night's small deltas cost one request, not one each.
    batches_per_request: int = DEFAULT_BATCHES_PER_REQUEST
    max_deletion_share: float = DEFAULT_MAX_SHARE  # the mass-deletion guard's threshold
    max_deletion_count: int = DEFAULT_MAX_COUNT

    @property
    def deletion_limit(self) -> DeletionLimit:
        return DeletionLimit(self.max_deletion_share, self.max_deletion_count)


@dataclass(frozen=True, slots=True)
class MisSettings:
    adapter: str
    options: Mapping[str, Any]  # the adapter's own (`agents.mis.registry` checks them)
    invalid_limit: InvalidLimit = DEFAULT_INVALID_LIMIT  # when an area is held whole


@dataclass(frozen=True, slots=True)
class AgentConfig:
    broker_url: str
    agent_key: Secret = field(repr=False)
    state_dir: Path
    mis: MisSettings
    schedules: Schedules
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS
    timezone: str | None = None
    ca_file: Path | None = None
    upload: UploadSettings = UploadSettings()
    # The merged TOML document, kept so `configure` can re-validate a change as a whole.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    base_dir: Path = field(default=Path(), repr=False, compare=False)

    def tls_context(self) -> ssl.SSLContext:
        return tls_context(self.ca_file)


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verified TLS 1.2 or newer; the maximum stays the library's (TLS 1.3 where possible)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def is_loopback_host(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_broker_url(url: str) -> str:
    """The URL without a trailing slash; https, or http to this machine only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(f"broker_url: expected https://host[:port], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("broker_url: no credentials, query or fragment")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(f"broker_url: plain http is allowed only to this machine, not {host!r}")
    return url.rstrip("/")


def load_config(path: Path) -> AgentConfig:
    """Read the file, apply the broker's overrides from the state directory, validate."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = path.resolve().parent
    config = parse_config(document, base)
    overrides = read_overrides(config.state_dir)
    return parse_config(merge(document, overrides), base) if overrides else config


def read_overrides(state_dir: Path) -> dict[str, Any]:
    target = state_dir / OVERRIDES_FILE
    try:
        loaded = orjson.loads(target.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{target}: unreadable overrides: {exc}") from None
    if not isinstance(loaded, dict) or set(loaded) - CONFIGURABLE_KEYS:
        raise ConfigError(f"{target}: overrides may only set {sorted(CONFIGURABLE_KEYS)}")
    return loaded


def write_overrides(state_dir: Path, overrides: Mapping[str, Any]) -> None:
    """Replace the overrides file atomically (a crash leaves the old or the new one)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / OVERRIDES_FILE
    temporary = target.with_suffix(".tmp")
    with temporary.open("wb") as handle:
        handle.write(orjson.dumps(overrides, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `changes` into a copy of `base` (tables merge, other values replace)."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_config(document: Mapping[str, Any], base_dir: Path) -> AgentConfig:
    _no_unknown(document, _TOP_KEYS, "")
    url = check_broker_url(_str(document, "broker_url", required=True))
    return AgentConfig(
        broker_url=url,
        agent_key=_agent_key(document, base_dir),
        state_dir=_path(base_dir, _str(document, "state_dir", required=True)),
        mis=_mis(_table(document, "mis", required=True), base_dir),
        schedules=parse_schedules(_table(document, "schedules")),
        heartbeat_seconds=_int(document, "heartbeat_seconds", DEFAULT_HEARTBEAT_SECONDS, 5, 3600),
        timezone=_timezone(document.get("timezone")),
        ca_file=_ca_file(_table(document, "tls"), base_dir),
        upload=_upload(_table(document, "upload")),
        raw=copy.deepcopy(dict(document)),
        base_dir=base_dir,
    )


def _agent_key(document: Mapping[str, Any], base_dir: Path) -> Secret:
    inline, file_name = document.get("agent_key"), document.get("agent_key_file")
    if (inline is None) == (file_name is None):
        raise ConfigError("set exactly one of agent_key and agent_key_file")
    if inline is not None:
        if not isinstance(inline, str) or not inline.strip():
            raise ConfigError("agent_key: expected a non-empty string")
        return Secret(inline.strip())
    if not isinstance(file_name, str):
        raise ConfigError("agent_key_file: expected a path")
    key_path = _path(base_dir, file_name)
    try:
        text = key_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"agent_key_file: cannot read {key_path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"agent_key_file: {key_path} is empty")
    return Secret(text)


def _mis(table: Mapping[str, Any], base_dir: Path) -> MisSettings:
    adapter = _str(table, "adapter", required=True, where="mis.")
    if adapter not in ADAPTERS:
        raise ConfigError(f"mis.adapter: expected one of {', '.join(ADAPTERS)}, got {adapter!r}")
    common = {"adapter", "max_invalid_share", "max_invalid_count"}
    options = {k: v for k, v in table.items() if k not in common}
    for key in ("directory", "mapping_file"):
        if isinstance(options.get(key), str):
            options[key] = _path(base_dir, options[key])
    share = table.get("max_invalid_share", DEFAULT_MAX_INVALID_SHARE)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError("mis.max_invalid_share: expected a number from 0 to 1")
    count = _int(table, "max_invalid_count", DEFAULT_MAX_INVALID_COUNT, 0, 10_000_000, "mis.")
    return MisSettings(adapter, options, InvalidLimit(float(share), count))


def parse_schedules(table: Mapping[str, Any]) -> Schedules:
    _no_unknown(table, {"nightly", "attendance", "behaviour", "weekly_full_day"}, "schedules.")
    day = table.get("weekly_full_day", "sunday")
    if not isinstance(day, str) or day.lower() not in WEEKDAYS:
        raise ConfigError(f"schedules.weekly_full_day: expected a weekday name, got {day!r}")
    nightly = _table(table, "nightly", where="schedules.")
    _no_unknown(nightly, {"start", "end", "areas"}, "schedules.nightly.")
    return Schedules(
        nightly=NightlySchedule(
            start=_time(nightly, "start", "01:00", "schedules.nightly."),
            end=_time(nightly, "end", "06:00", "schedules.nightly."),
            areas=_areas(nightly, tuple(sorted(CORE_AREAS)), "schedules.nightly."),
        ),
        attendance=_periodic(table, "attendance", 30, "16:30", ATTENDANCE_AREAS),
        behaviour=_periodic(table, "behaviour", 60, "17:00", BEHAVIOUR_AREAS),
        weekly_full_day=WEEKDAYS.index(day.lower()),
    )


def _periodic(
    table: Mapping[str, Any], name: str, every: int, end: str, areas: tuple[str, ...]
) -> PeriodicSchedule:
    where = f"schedules.{name}."
    sub = _table(table, name, where="schedules.")
    _no_unknown(sub, {"every_minutes", "start", "end", "weekdays_only", "areas"}, where)
    start_at, end_at = _time(sub, "start", "08:00", where), _time(sub, "end", end, where)
    if end_at <= start_at:
        raise ConfigError(f"{where}end: must be after {where}start")
    weekdays_only = sub.get("weekdays_only", True)
    if not isinstance(weekdays_only, bool):
        raise ConfigError(f"{where}weekdays_only: expected true or false")
    return PeriodicSchedule(
        every_minutes=_int(sub, "every_minutes", every, 0, 24 * 60, where),
        start=start_at,
        end=end_at,
        weekdays_only=weekdays_only,
        areas=_areas(sub, areas, where),
    )


def _upload(table: Mapping[str, Any]) -> UploadSettings:
    keys = {"timeout_seconds", "retry_cap_seconds", "retry_budget_seconds"}
    _no_unknown(
        table,
        keys
        | {"max_batch_bytes", "batches_per_request", "max_deletion_share", "max_deletion_count"},
        "upload.",
    )
    values = {}
    for key in sorted(keys):
        value = table.get(key, getattr(UploadSettings(), key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"upload.{key}: expected a positive number")
        values[key] = float(value)
    max_batch_bytes = _int(
        table,
        "max_batch_bytes",
        DEFAULT_MAX_BATCH_BYTES,
        MIN_BATCH_BYTES,
        MAX_BATCH_BYTES,
        "upload.",
    )
    batches_per_request = _int(
        table,
        "batches_per_request",
        DEFAULT_BATCHES_PER_REQUEST,
        1,
        MAX_BATCHES_PER_REQUEST,
        "upload.",
    )
    share = table.get("max_deletion_share", DEFAULT_MAX_SHARE)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError("upload.max_deletion_share: expected a number from 0 to 1")
    count = _int(table, "max_deletion_count", DEFAULT_MAX_COUNT, 0, 10_000_000, "upload.")
    return UploadSettings(
        **values,
        max_batch_bytes=max_batch_bytes,
        batches_per_request=batches_per_request,
        max_deletion_share=float(share),
        max_deletion_count=count,
    )


def _ca_file(table: Mapping[str, Any], base_dir: Path) -> Path | None:
    _no_unknown(table, {"ca_file"}, "tls.")
    name = table.get("ca_file")
    if name is None:
        return None
    if not isinstance(name, str):
        raise ConfigError("tls.ca_file: expected a path")
    path = _path(base_dir, name)
    if not path.is_file():
        raise ConfigError(f"tls.ca_file: {path} does not exist")
    return path


def _timezone(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("timezone: expected an IANA name such as Europe/London")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"timezone: unknown zone {value!r} (on Windows install tzdata, or omit it)"
        ) from None
    return value


def _areas(table: Mapping[str, Any], default: tuple[str, ...], where: str) -> tuple[str, ...]:
    value = table.get("areas")
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ConfigError(f"{where}areas: expected a list of area names")
    unknown = [a for a in value if a not in CATALOGUE]
    if unknown:
        raise ConfigError(f"{where}areas: unknown area(s) {', '.join(unknown)}")
    return tuple(dict.fromkeys(value))


def _time(table: Mapping[str, Any], key: str, default: str, where: str) -> time:
    value = table.get(key, default)
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0)
    try:
        hours, minutes = str(value).split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ConfigError(f"{where}{key}: expected HH:MM, got {value!r}") from None


def _int(
    table: Mapping[str, Any], key: str, default: int, low: int, high: int, where: str = ""
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}{key}: expected a whole number {low}-{high}, got {value!r}")
    return value


def _str(table: Mapping[str, Any], key: str, *, required: bool = False, where: str = "") -> str:
    value = table.get(key)
    if value is None and required:
        raise ConfigError(f"{where}{key}: required")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}{key}: expected a non-empty string")
    return value.strip()


def _table(
    table: Mapping[str, Any], key: str, *, required: bool = False, where: str = ""
) -> Mapping[str, Any]:
    value = table.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}{key}: required table [{where}{key}]")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{key}: expected a table")
    return value


def _no_unknown(table: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown key")


def _path(base_dir: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base_dir / path
