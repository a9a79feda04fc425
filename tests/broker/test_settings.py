"""Settings: derived embedded defaults, bounds, and production's refusal of placeholders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.settings import BrokerSettings, SettingsError, load_settings


def test_embedded_defaults_derive_from_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path}/misbroker.db"
    assert settings.redis_url == f"unix://{tmp_path}/run/redis.sock"
    # Celery's queue and the security state share the server that never evicts.
    assert settings.state_redis_url == f"unix://{tmp_path}/run/state-redis.sock"
    assert settings.celery_broker_url == f"redis+socket://{tmp_path}/run/state-redis.sock"
    assert settings.blob_dir == tmp_path / "blobs"
    assert settings.embedded_redis
    assert settings.consent.revocation_grace.total_seconds() == 72 * 3600


def test_a_deep_data_dir_still_gets_a_usable_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    sock = load_settings(deep).embedded_redis_socket
    assert len(str(sock)) <= 100
    assert sock != load_settings(tmp_path / "other").embedded_redis_socket


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISBROKER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MISBROKER_REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("MISBROKER_REVOCATION_GRACE_HOURS", "0")
    settings = load_settings()
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.celery_broker_url == "redis://cache:6379/1"
    assert not settings.embedded_redis
    assert settings.consent.revocation_grace.total_seconds() == 0


@pytest.mark.parametrize("hours", ["-1", "72.5", "100"])
def test_grace_is_bounded_to_72_hours(monkeypatch: pytest.MonkeyPatch, hours: str) -> None:
    monkeypatch.setenv("MISBROKER_REVOCATION_GRACE_HOURS", hours)
    with pytest.raises(ValidationError, match="revocation_grace_hours"):
        load_settings()


PRODUCTION = {
    "MISBROKER_ENVIRONMENT": "production",
    "MISBROKER_DATABASE_URL": "postgresql://mb:Xk3-long-random-pw@db/mb",
    "MISBROKER_REDIS_URL": "redis://:Xk3-long-random-pw@cache:6379/0",
    "MISBROKER_CELERY_BROKER_URL": "redis://:Xk3-long-random-pw@queue:6379/0",
    "MISBROKER_KEK": "kT3v0Jw1m2q8yQeZr5o8B1nXvH4c9pD6aS7fG2hJ3kE=",
}


def test_a_complete_production_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    assert load_settings().production


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("MISBROKER_KEK", "changeme", "MISBROKER_KEK is a placeholder"),
        ("MISBROKER_DATABASE_URL", "postgresql://mb:password@db/mb", "placeholder password"),
        ("MISBROKER_REDIS_URL", "redis://:changeme@cache:6379/0", "placeholder password"),
        ("MISBROKER_CLOCK", "file:/tmp/now", "MISBROKER_CLOCK"),
    ],
)
def test_production_refuses_placeholders(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, message: str
) -> None:
    for k, v in PRODUCTION.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


@pytest.mark.parametrize("missing", ["MISBROKER_DATABASE_URL", "MISBROKER_REDIS_URL"])
def test_production_needs_explicit_services(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    for k, v in PRODUCTION.items():
        if k != missing:
            monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError, match=missing):
        load_settings()


def test_production_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in PRODUCTION.items():
        if k != "MISBROKER_KEK":
            monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError, match="MISBROKER_KEK or MISBROKER_KEK_FILE"):
        load_settings()


@pytest.mark.parametrize(("value", "taken"), [("120", 120), (None, 3600)])
def test_the_queue_s_visibility_timeout_is_a_setting(
    tmp_path: Path, value: str | None, taken: int
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}
    env["MISBROKER_DATA_DIR"] = str(tmp_path)
    if value is not None:
        env["MISBROKER_CELERY_VISIBILITY_TIMEOUT_SECONDS"] = value
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import broker.celeryconfig as c;"
            "print(c.broker_transport_options['visibility_timeout'])",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(shown.stdout) == taken


def test_a_visibility_timeout_shorter_than_a_minute_is_refused() -> None:
    with pytest.raises(ValidationError):
        BrokerSettings(celery_visibility_timeout_seconds=10)
