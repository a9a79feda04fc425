"""Fixtures of the cache tests: a migrated database of each kind, keys, blobs, hot tier."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import redis
from sqlalchemy import Engine

from broker.clock import FrozenClock
from broker.db import make_engine, session_scope, upgrade
from cache.blobs import BlobStore, DirectoryBlobStore
from cache.hot import HotCache
from cache.key_store import SqlDataKeyStore
from cache.keys import KeyRing, LocalKeyProvider
from cache.naming import Namer
from cache.s3_blobs import S3BlobStore
from cache.service import CacheService
from cache.settings import CacheSettings
from cache.tasks import CacheDeps
from tests.conftest import T0
from tests.support.seaweedfs import SeaweedFS

SCHOOL = "sch_0001"
OTHER_SCHOOL = "sch_0002"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def provider() -> LocalKeyProvider:
    return LocalKeyProvider({"k1": secrets.token_bytes(32)}, "k1")


@pytest.fixture
def key_store(engine: Engine) -> SqlDataKeyStore:
    return SqlDataKeyStore(engine)


@pytest.fixture
def keyring(provider: LocalKeyProvider, key_store: SqlDataKeyStore) -> KeyRing:
    return KeyRing(provider, key_store)


@pytest.fixture
def namer(keyring: KeyRing) -> Namer:
    return Namer(keyring)


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def blobs(blob_dir: Path) -> DirectoryBlobStore:
    return DirectoryBlobStore(blob_dir)


@pytest.fixture(params=["directory", pytest.param("s3", marks=pytest.mark.s3)])
def blob_store(request: pytest.FixtureRequest, blob_dir: Path) -> BlobStore:
    """Each cold-tier adapter: the directory, and a bucket on a real S3 server.

    A module that wants its tests run on both names this one as its `blobs`.
    """
    if request.param == "directory":
        return DirectoryBlobStore(blob_dir)
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    settings = server.settings(prefix=f"t-{secrets.token_hex(6)}")
    location = settings.blob_location
    assert location is not None
    return S3BlobStore(location, settings)


@pytest.fixture
def hot(redis_client: redis.Redis, keyring: KeyRing, namer: Namer) -> HotCache:
    return HotCache(redis_client, keyring, namer, ttl_seconds=900)


@pytest.fixture
def service(
    keyring: KeyRing, blobs: DirectoryBlobStore, hot: HotCache, namer: Namer
) -> CacheService:
    return CacheService(keyring=keyring, blobs=blobs, hot=hot, namer=namer)


@pytest.fixture
def deps(
    engine: Engine,
    redis_client: redis.Redis,
    blobs: DirectoryBlobStore,
    keyring: KeyRing,
    key_store: SqlDataKeyStore,
    clock: FrozenClock,
) -> CacheDeps:
    return CacheDeps(
        engine=engine,
        redis=redis_client,
        blobs=blobs,
        keyring=keyring,
        key_store=key_store,
        clock=clock,
        settings=CacheSettings(),
    )


def student(number: int, **changes: Any) -> dict[str, Any]:
    """A students.basic record; `number` makes it unique."""
    record: dict[str, Any] = {
        "id": f"stu-{number:05d}",
        "upn": f"A{number:012d}",
        "forename": f"Forename{number}",
        "surname": f"Surname{number}",
        "date_of_birth": "2013-04-01",
        "gender": "F",
        "year_group": "Year 8",
        "registration_group": "8B",
        "on_roll": True,
    }
    record.update(changes)
    return record


def students(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [student(n) for n in range(start, start + count)]


def upload(
    engine: Engine,
    service: CacheService,
    area: str,
    records: list[dict[str, Any]],
    school: str = SCHOOL,
    at: datetime = T0,
    *,
    mode: Literal["full", "delta"] = "full",
    deleted: Sequence[str] = (),
    deletion_guard: Callable[[int, int], None] | None = None,
) -> None:
    """An upload of `records` (full unless said), extracted and applied at `at`."""
    with session_scope(engine) as session:
        service.apply_batch(
            session,
            school_id=school,
            area=area,
            mode=mode,
            records=records,
            deleted=list(deleted),
            extracted_at=at,
            now=at,
            deletion_guard=deletion_guard,
        )


def read(engine: Engine, service: CacheService, area: str, school: str = SCHOOL) -> Any:
    """The first page of an area as a partner is served it, an hour after T0."""
    with session_scope(engine) as session:
        page = service.read_page(
            session,
            school_id=school,
            area=area,
            fields=None,
            updated_since=None,
            limit=100,
            cursor=None,
            now=T0 + timedelta(hours=1),
        )
    return orjson.loads(page.body)["data"]
