"""The encrypted cache inside a broker process (API, worker, CLI): one way to build it."""

from __future__ import annotations

from broker.resources import Resources
from cache.hot import HotCache
from cache.key_store import SqlDataKeyStore
from cache.keys import KeyRing
from cache.naming import Namer
from cache.service import CacheService


def build_keyring(resources: Resources) -> KeyRing:
    return KeyRing(resources.key_provider, SqlDataKeyStore(resources.engine, resources.clock.now))


def build_cache_service(resources: Resources, keyring: KeyRing | None = None) -> CacheService:
    keyring = keyring or build_keyring(resources)
    namer = Namer(keyring)
    hot = HotCache(
        resources.redis_sync(),
        keyring,
        namer,
        ttl_seconds=resources.settings.cache.hot_ttl_seconds,
    )
    return CacheService(keyring=keyring, blobs=resources.blobs, hot=hot, namer=namer)
