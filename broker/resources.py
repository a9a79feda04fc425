"""The clients a broker process needs, built once at start-up (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio as aredis
from sqlalchemy import Engine

from broker.clock import Clock, FileClock, SystemClock
from broker.db import make_engine
from broker.keyring import load_key_provider
from broker.sealing import KekSealer
from broker.security import SecretSealer
from broker.settings import Settings, SettingsError
from cache.blobs import BlobStore, DirectoryBlobStore
from cache.keys import KeyProvider


def build_clock(spec: str) -> Clock:
    if spec == "system":
        return SystemClock()
    if spec.startswith("file:"):
        return FileClock(Path(spec.removeprefix("file:")))
    raise SettingsError(f"MISBROKER_CLOCK must be 'system' or 'file:PATH', not {spec!r}")


def open_blob_store(settings: Settings) -> BlobStore:
    """The cold tier the settings name: an S3-compatible bucket, else the blob directory."""
    location = settings.cache.blob_location
    if location is None:
        return DirectoryBlobStore(settings.blob_dir)
    from cache.s3_blobs import S3BlobStore  # boto3 is loaded only by deployments that use it

    return S3BlobStore(location, settings.cache)


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    clock: Clock
    blobs: BlobStore
    key_provider: KeyProvider
    sealer: SecretSealer

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Resources:
        provider = load_key_provider(settings)
        return cls(
            settings=settings,
            engine=make_engine(settings.database_url),
            clock=clock or build_clock(settings.broker.clock),
            blobs=open_blob_store(settings),
            key_provider=provider,
            sealer=KekSealer(provider),
        )

    def redis_sync(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=5)

    def redis_async(self) -> aredis.Redis:
        return aredis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=2
        )

    def state_redis_sync(self) -> redis.Redis:
        """The Redis of security state (tokens, lockouts, rate limits): never evicted."""
        return redis.Redis.from_url(
            self.settings.state_redis_url, socket_timeout=5, socket_connect_timeout=2
        )

    def state_redis_async(self) -> aredis.Redis:
        return aredis.Redis.from_url(
            self.settings.state_redis_url, socket_timeout=5, socket_connect_timeout=2
        )

    def close(self) -> None:
        self.engine.dispose()
