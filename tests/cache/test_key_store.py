"""The SQL DataKeyStore keeps the contract of cache.keys.DataKeyStore on both databases."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select

from broker.db import make_engine
from cache.key_store import SqlDataKeyStore
from cache.keys import (
    DataKeyConflictError,
    KeyRing,
    KeyShreddedError,
    LocalKeyProvider,
    StoredDataKey,
    UnknownKeyVersionError,
    WrappedKey,
)
from cache.models import data_keys, shredded_schools


def key(school: str, version: int, kek: str = "k1", blob: bytes = b"w" * 60) -> StoredDataKey:
    return StoredDataKey(school, version, WrappedKey(kek, blob))


def test_add_get_current_and_versions(key_store: SqlDataKeyStore) -> None:
    assert key_store.current("s1") is None
    key_store.add(key("s1", 1, blob=b"one"))
    key_store.add(key("s1", 2, blob=b"two"))
    key_store.add(key("s2", 1))
    assert key_store.get("s1", 1) == key("s1", 1, blob=b"one")
    assert key_store.get("s1", 3) is None
    assert key_store.current("s1") == key("s1", 2, blob=b"two")
    assert [k.version for k in key_store.versions("s1")] == [1, 2]
    assert key_store.versions("nobody") == []


def test_a_duplicate_version_is_a_conflict_and_changes_nothing(key_store: SqlDataKeyStore) -> None:
    key_store.add(key("s1", 1, blob=b"first"))
    with pytest.raises(DataKeyConflictError):
        key_store.add(key("s1", 1, blob=b"second"))
    assert key_store.get("s1", 1) == key("s1", 1, blob=b"first")


def test_versions_beyond_32_bit_signed_fit(key_store: SqlDataKeyStore) -> None:
    key_store.add(key("s1", 2**32 - 1))
    assert key_store.current("s1") == key("s1", 2**32 - 1)


def test_destroy_deletes_every_version_and_leaves_a_tombstone(
    key_store: SqlDataKeyStore, engine: Engine
) -> None:
    key_store.add(key("s1", 1))
    key_store.add(key("s1", 2))
    key_store.add(key("s2", 1))
    key_store.destroy("s1")
    key_store.destroy("s1")  # idempotent
    assert key_store.is_shredded("s1")
    assert not key_store.is_shredded("s2")
    assert key_store.get("s1", 1) is None
    assert key_store.versions("s1") == []
    with engine.connect() as conn:
        assert conn.execute(select(data_keys.c.school_id)).scalars().all() == ["s2"]
        assert conn.execute(select(shredded_schools.c.school_id)).scalars().all() == ["s1"]
    with pytest.raises(KeyShreddedError):
        key_store.add(key("s1", 3))
    assert key_store.versions("s1") == []


def test_replace_wrapping_and_listing_by_kek(key_store: SqlDataKeyStore) -> None:
    key_store.add(key("s1", 1, kek="old"))
    key_store.add(key("s2", 1, kek="old"))
    key_store.add(key("s3", 1, kek="new"))
    assert [k.school_id for k in key_store.wrapped_by_other_kek("new", limit=10)] == ["s1", "s2"]
    assert len(key_store.wrapped_by_other_kek("new", limit=1)) == 1
    key_store.replace_wrapping("s1", 1, WrappedKey("new", b"rewrapped"))
    key_store.replace_wrapping("s9", 1, WrappedKey("new", b"nothing"))  # missing: no-op
    assert key_store.get("s1", 1) == key("s1", 1, kek="new", blob=b"rewrapped")
    assert key_store.get("s9", 1) is None
    assert [k.school_id for k in key_store.wrapped_by_other_kek("new", limit=10)] == ["s2"]


def test_keyrings_in_two_processes_share_keys_and_shreds(
    database_url: str, engine: Engine, provider: LocalKeyProvider
) -> None:
    """Two engines stand for two processes: a key made by one is the key of the other."""
    other_engine = make_engine(database_url)
    try:
        first = KeyRing(provider, SqlDataKeyStore(engine))
        second = KeyRing(provider, SqlDataKeyStore(other_engine))
        version, data_key = first.encryption_key("s1")
        assert second.decryption_key("s1", version) == data_key
        assert second.encryption_key("s1") == (version, data_key)
        second.shred("s1")
        with pytest.raises(KeyShreddedError):
            KeyRing(provider, SqlDataKeyStore(engine)).decryption_key("s1", version)
        with pytest.raises(KeyShreddedError):
            KeyRing(provider, SqlDataKeyStore(engine)).encryption_key("s1")
        with pytest.raises(UnknownKeyVersionError):
            first.decryption_key("s2", 1)
    finally:
        other_engine.dispose()


def test_concurrent_first_writes_agree_on_one_key(
    engine: Engine, provider: LocalKeyProvider
) -> None:
    rings = [KeyRing(provider, SqlDataKeyStore(engine)) for _ in range(6)]
    barrier = threading.Barrier(len(rings))
    results: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def first_write(ring: KeyRing) -> None:
        barrier.wait()
        try:
            results.append(ring.encryption_key("s1"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_write, args=(ring,)) for ring in rings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert [k.version for k in SqlDataKeyStore(engine).versions("s1")] == [1]
