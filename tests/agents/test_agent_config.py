"""Config: TLS only (loopback excepted), verified TLS 1.2+, one-line errors, no key leaks."""

import logging
import ssl
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from agents.config import (
    ConfigError,
    check_broker_url,
    load_config,
    parse_config,
    tls_context,
    write_overrides,
)
from agents.logs import configure
from tests.agents.agent_fakes import KEY, config_document


def toml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "url",
    [
        "https://broker.example.org",
        "https://broker.example.org:8443/",
        "http://127.0.0.1:8080",
        "http://127.8.9.10",
        "http://[::1]:8080",
        "http://localhost:8080",
    ],
)
def test_https_anywhere_and_http_only_to_this_machine(url: str) -> None:
    assert check_broker_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker.example.org", "plain http is allowed only to this machine"),
        ("http://10.0.0.5:8080", "plain http"),
        ("http://localhost.example.org", "plain http"),
        ("ftp://broker.example.org", "expected https://"),
        ("https://user:pw@broker.example.org", "no credentials"),
        ("broker.example.org", "expected https://"),
    ],
)
def test_other_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_broker_url(url)


def test_tls_context_verifies_and_needs_tls_1_2() -> None:
    context = tls_context(None)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.maximum_version in (ssl.TLSVersion.MAXIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_3)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_full_file_loads_with_relative_paths_and_a_key_file(tmp_path: Path) -> None:
    (tmp_path / "agent.key").write_text(KEY + "\n")
    (tmp_path / "exports").mkdir()
    path = toml_file(
        tmp_path,
        """
broker_url = "https://broker.example.org"
agent_key_file = "agent.key"
state_dir = "state"
heartbeat_seconds = 30
timezone = "Europe/London"

[mis]
adapter = "csv"
directory = "exports"

[schedules]
weekly_full_day = "saturday"
nightly = { start = "02:00", end = "05:00" }
attendance = { every_minutes = 15, start = "08:30", end = "15:30" }
behaviour = { every_minutes = 0 }

[upload]
retry_cap_seconds = 120
""",
    )
    config = load_config(path)
    assert config.agent_key.reveal() == KEY
    assert config.state_dir == tmp_path / "state"
    assert config.mis.options["directory"] == tmp_path / "exports"
    assert config.heartbeat_seconds == 30
    assert config.schedules.weekly_full_day == 5
    assert config.schedules.nightly.start.hour == 2
    assert config.schedules.attendance.every_minutes == 15
    assert config.schedules.behaviour.every_minutes == 0
    assert config.upload.retry_cap_seconds == 120


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"agent_key": None}, "set exactly one of agent_key and agent_key_file"),
        ({"heartbeat_seconds": 0}, "heartbeat_seconds: expected a whole number 5-3600"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"mis": {"adapter": "sims"}}, "mis.adapter: expected one of synthetic, csv, oneroster"),
        ({"schedules": {"nightly": {"start": "1am"}}}, "schedules.nightly.start: expected HH:MM"),
        ({"schedules": {"weekly_full_day": "funday"}}, "weekly_full_day"),
        ({"schedules": {"attendance": {"areas": ["nope"]}}}, "unknown area"),
        ({"schedules": {"behaviour": {"start": "17:00", "end": "09:00"}}}, "must be after"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown zone"),
        ({"tls": {"ca_file": "missing.pem"}}, "tls.ca_file"),
        ({"upload": {"retry_cap_seconds": -1}}, "upload.retry_cap_seconds"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    document = config_document(tmp_path / "state", **changes)
    document = {k: v for k, v in document.items() if v is not None}
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(document, tmp_path)
    assert "\n" not in str(caught.value)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(toml_file(tmp_path, "broker_url = "))


def test_overrides_from_the_broker_apply_on_load(tmp_path: Path) -> None:
    path = toml_file(
        tmp_path,
        f'broker_url = "http://127.0.0.1:1"\nagent_key = "{KEY}"\nstate_dir = "s"\n'
        '[mis]\nadapter = "synthetic"\n',
    )
    write_overrides(tmp_path / "s", {"heartbeat_seconds": 45})
    assert load_config(path).heartbeat_seconds == 45
    write_overrides(tmp_path / "s", {"mis": {"adapter": "csv"}})
    with pytest.raises(ConfigError, match="overrides may only set"):
        load_config(path)


def test_the_key_never_shows_in_reprs_or_logs(tmp_path: Path) -> None:
    config = parse_config(config_document(tmp_path), tmp_path)
    assert KEY not in repr(config)
    assert KEY not in str(config.agent_key)
    assert KEY not in f"{config.agent_key}"
    stream = StringIO()
    configure("INFO", secrets=[KEY], stream=stream)
    logging.getLogger("agents.test").info("oops %s", KEY, extra={"fields": {"key": KEY}})
    assert KEY not in stream.getvalue()
    assert "********" in stream.getvalue()


def test_jitter_seed_is_stable_and_differs_per_key(tmp_path: Path) -> None:
    one = parse_config(config_document(tmp_path), tmp_path).agent_key
    two = parse_config(config_document(tmp_path, agent_key="agk_other"), tmp_path).agent_key
    assert one.jitter_seed() == one.jitter_seed()
    assert one.jitter_seed() != two.jitter_seed()
