"""Shared fixtures: real Redis, real SQLite and PostgreSQL, a frozen clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from broker.app import create_app
from broker.clock import FrozenClock
from broker.db import make_engine, upgrade
from broker.settings import BrokerSettings, Environment, Settings
from cache.settings import CacheSettings
from consent.settings import ConsentSettings
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server
from tests.support.servers import postgres_server, redis_server

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's MISBROKER_* variables must not leak into a test."""
    for name in list(os.environ):
        if name.startswith("MISBROKER_") and name != "MISBROKER_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind: the database layer is tested on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    server_url = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def make_settings(data_dir: Path, **broker: object) -> Settings:
    return Settings(
        broker=BrokerSettings(data_dir=data_dir, environment=Environment.TEST, **broker),  # type: ignore[arg-type]
        consent=ConsentSettings(),
        cache=CacheSettings(),
    )


def migrated_settings(data_dir: Path, redis_url: str, database_url: str | None = None) -> Settings:
    """A deployment in `data_dir`, its database (SQLite there by default) at the newest."""
    extra = {} if database_url is None else {"database_url": database_url}
    settings = make_settings(data_dir, redis_url=redis_url, **extra)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    return settings


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> Settings:
    """An embedded-style deployment in a temp dir, its database migrated to the newest."""
    return migrated_settings(tmp_path / "data", redis_url)


@pytest.fixture
def settings_on_each_database(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, database_url: str
) -> Settings:
    """The same on SQLite and on PostgreSQL: a module whose rules depend on the database's
    locking overrides `settings` with this."""
    return migrated_settings(tmp_path / "data", redis_url, database_url)


@pytest.fixture
def app(settings: Settings, clock: FrozenClock) -> FastAPI:
    return create_app(settings, clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3 server (SeaweedFS) for the session; tests use a fresh prefix each."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
