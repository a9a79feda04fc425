"""The S3 cold tier against a real S3 server (SeaweedFS): what the directory tests cannot show.

The port's behaviour (demote, promote, photos, purge, shred) runs on both adapters in
test_cold.py and test_purge.py; here: the bucket holds sealed bytes under opaque names
only, large photos go in parts, the store rides out a server restart, readiness follows
the bucket, and neither settings nor errors show the credentials.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

from broker.app import create_app
from broker.clock import FrozenClock
from broker.db import make_engine, upgrade
from broker.logging import configure_logging
from broker.settings import Settings
from cache import tasks
from cache.blobs import BlobStore, BlobStoreError
from cache.s3_blobs import S3BlobStore
from cache.service import CacheService
from cache.settings import CacheSettings, S3Location, parse_s3_url
from tests.cache.conftest import SCHOOL, read, student, students, upload
from tests.conftest import T0, make_settings
from tests.support.seaweedfs import SeaweedFS, seaweedfs_server
from tests.support.servers import wait_until

pytestmark = pytest.mark.s3

CANARY = "Zanzibarine"
PHOTOS = "students.photos"
MiB = 1 << 20


def store_on(server: SeaweedFS, **changes: object) -> S3BlobStore:
    settings = server.settings(prefix=f"t-{secrets.token_hex(6)}", **changes)
    location = settings.blob_location
    assert location is not None
    return S3BlobStore(location, settings)


def bucket_objects(server: SeaweedFS, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix`, read with a plain client behind the store's back."""
    client: Any = server.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=prefix
    ):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=server.bucket, Key=item["Key"])["Body"].read()
            found[item["Key"]] = body
    return found


@pytest.fixture
def blobs(seaweedfs: SeaweedFS) -> S3BlobStore:
    return store_on(seaweedfs, blob_multipart_bytes=5 * MiB)


@pytest.fixture
def own_seaweedfs(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A server of this test's own, for tests that stop it."""
    with seaweedfs_server(tmp_path / "seaweedfs") as server:
        yield server


def test_round_trip_through_the_port(blobs: S3BlobStore, seaweedfs: SeaweedFS) -> None:
    blobs.check()
    assert blobs.get("abc/missing") is None
    blobs.put("abc/one", b"\x00sealed one")
    blobs.put("abc/two", b"sealed two")
    blobs.put("def/three", b"sealed three")
    assert blobs.get("abc/one") == b"\x00sealed one"
    assert list(blobs.keys()) == ["abc/one", "abc/two", "def/three"]
    assert list(blobs.keys("abc/")) == ["abc/one", "abc/two"]
    # The deployment's prefix is the store's own: nothing is written outside it.
    assert set(bucket_objects(seaweedfs, blobs.prefix)) == {
        blobs.prefix + key for key in ("abc/one", "abc/two", "def/three")
    }
    assert blobs.delete("abc/one") is True
    assert blobs.delete("abc/one") is False
    assert blobs.delete_prefix("abc/") == 1
    assert list(blobs.keys()) == ["def/three"]
    with pytest.raises(ValueError, match="invalid blob key"):
        blobs.put("../escape", b"x")


def test_the_bucket_holds_only_sealed_bytes_under_opaque_names(
    engine: Engine,
    service: CacheService,
    deps: tasks.CacheDeps,
    clock: FrozenClock,
    blobs: S3BlobStore,
    seaweedfs: SeaweedFS,
) -> None:
    records = [student(1, surname=CANARY), *students(4, start=2)]
    upload(engine, service, "students.basic", records)
    photo = base64.b64encode(f"jpeg of {CANARY}".encode()).decode()
    upload(engine, service, PHOTOS, [{"id": "stu-00001", "photo": photo}])
    clock.set(T0 + timedelta(days=8))
    assert (SCHOOL, "students.basic") in (tasks.demote_idle(deps) or [])
    stored = bucket_objects(seaweedfs, blobs.prefix)
    assert len(stored) == 3  # the basic area's bundle, the photo area's bundle, one photo
    for name, body in stored.items():
        assert CANARY.encode() not in body
        assert b"stu-00001" not in body
        for visible in (SCHOOL, "students", "basic", "photos", "stu-"):
            assert visible not in name


def test_a_large_photo_is_uploaded_in_parts_and_reads_back(
    engine: Engine, service: CacheService, blobs: S3BlobStore, seaweedfs: SeaweedFS
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + secrets.token_bytes(11 * MiB)
    photo = base64.b64encode(jpeg).decode()
    upload(engine, service, PHOTOS, [{"id": "stu-1", "photo": photo}])
    (key,) = blobs.keys()
    head = seaweedfs.client().head_object(  # type: ignore[attr-defined]
        Bucket=seaweedfs.bucket, Key=blobs.prefix + key
    )
    # A multipart object's ETag is "<digest>-<parts>": 11 MiB sealed, in parts of 5 MiB.
    assert head["ETag"].strip('"').endswith("-3")
    assert read(engine, service, PHOTOS)[0]["photo"] == photo


def test_a_call_in_flight_rides_out_a_server_restart(own_seaweedfs: SeaweedFS) -> None:
    store = store_on(own_seaweedfs, blob_max_attempts=12)
    store.put("k/before", b"sealed")
    sends: list[str] = []
    # botocore's hook before each attempt hits the wire: the test waits on attempts, not time.
    store._s3.meta.events.register("before-send.s3", lambda **_: sends.append("send"))
    own_seaweedfs.stop()
    outcome: dict[str, object] = {}

    def put_while_down() -> None:
        try:
            store.put("k/during", b"sealed during the outage")
            outcome["ok"] = True
        except BlobStoreError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=put_while_down)
    worker.start()
    try:
        assert wait_until(lambda: len(sends) >= 2, timeout=60)  # refused, then retried
    finally:
        own_seaweedfs.start()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert outcome == {"ok": True}
    assert store.get("k/during") == b"sealed during the outage"
    assert store.get("k/before") == b"sealed"


def test_a_call_that_outlasts_the_retries_is_a_blob_store_error(own_seaweedfs: SeaweedFS) -> None:
    store = store_on(own_seaweedfs, blob_max_attempts=2)
    own_seaweedfs.stop()
    with pytest.raises(BlobStoreError, match="blob store: get failed"):
        store.get("k/any")


def test_readyz_follows_the_bucket(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    clock: FrozenClock,
    own_seaweedfs: SeaweedFS,
) -> None:
    base = make_settings(tmp_path / "data", redis_url=redis_url)
    settings = Settings(broker=base.broker, consent=base.consent, cache=own_seaweedfs.settings())
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    with TestClient(create_app(settings, clock=clock), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["blob_store"] == "ok"
        own_seaweedfs.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["checks"]["blob_store"].startswith("down")
        assert down.json()["checks"]["database"] == "ok"
        own_seaweedfs.start()
        assert wait_until(lambda: client.get("/readyz").status_code == 200, timeout=60)
    assert not settings.blob_dir.exists()  # the directory store was never used


def test_a_versioned_bucket_is_not_ready(seaweedfs: SeaweedFS) -> None:
    client: Any = seaweedfs.client()
    bucket = f"versioned-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    settings = seaweedfs.settings()
    store = S3BlobStore(S3Location(bucket, "p/"), settings)
    with pytest.raises(BlobStoreError, match="versioning"):
        store.check()


def test_credentials_are_never_shown(
    seaweedfs: SeaweedFS, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + secrets.token_urlsafe(20)
    settings = seaweedfs.settings(blob_secret_access_key=wrong)
    assert wrong not in repr(settings)
    assert seaweedfs.access_key not in repr(settings)
    location = settings.blob_location
    assert location is not None
    store: BlobStore = S3BlobStore(location, settings)
    with pytest.raises(BlobStoreError) as refused:
        store.check()
    with pytest.raises(BlobStoreError) as failed:
        store.put("k/x", b"sealed")
    for text in (str(refused.value), str(failed.value), caplog.text):
        assert wrong not in text


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://cold-tier", "cold-tier", ""),
        ("s3://cold-tier/", "cold-tier", ""),
        ("s3://cold.tier/misbroker/prod", "cold.tier", "misbroker/prod/"),
    ],
)
def test_blob_urls_name_a_bucket_and_a_prefix(url: str, bucket: str, prefix: str) -> None:
    assert parse_s3_url(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize(
    "url",
    [
        "https://cold-tier/x",
        "s3://Cold_Tier/x",
        "s3://ab",
        "s3://key:secret@cold-tier/x",
        "s3://cold-tier/a/../b",
        "s3://cold-tier/x?region=eu",
    ],
)
def test_other_blob_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="MISBROKER_BLOB_URL"):
        CacheSettings(blob_url=url)


def test_the_cold_tier_logs_no_credentials_even_at_debug(
    seaweedfs: SeaweedFS, capfd: pytest.CaptureFixture[str]
) -> None:
    """botocore logs whole signed requests at DEBUG; the broker's logging keeps it quiet."""
    configure_logging("DEBUG")
    try:
        store = store_on(seaweedfs)
        store.put("k/one", b"sealed")
        assert store.get("k/one") == b"sealed"
        logging.getLogger("cache").debug("the broker's own debug lines still print")
    finally:
        configure_logging("INFO")
    printed = capfd.readouterr().err
    assert "the broker's own debug lines still print" in printed
    assert seaweedfs.access_key not in printed
    assert seaweedfs.secret_key not in printed
