"""KEK providers, key files and env secrets, the data-key store, and the KeyRing."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from cache.keys import (
    ENV_KEK_ID,
    InMemoryDataKeyStore,
    KeyConfigError,
    KeyRing,
    KeyringError,
    KeyShreddedError,
    KeyUnwrapError,
    LocalKeyProvider,
    UnknownKeyVersionError,
    WrappedKey,
    data_key_context,
)
from tests.support.monotonic import FakeMonotonic

SCHOOL = "sch_0001"
OTHER = "sch_0002"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def provider(*kek_ids: str, current: str | None = None) -> LocalKeyProvider:
    keys = {kek_id: secrets.token_bytes(32) for kek_id in kek_ids}
    return LocalKeyProvider(keys, current or kek_ids[0])


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def store() -> InMemoryDataKeyStore:
    return InMemoryDataKeyStore()


@pytest.fixture
def kek() -> LocalKeyProvider:
    return provider("k1")


@pytest.fixture
def ring(kek: LocalKeyProvider, store: InMemoryDataKeyStore, clock: FakeMonotonic) -> KeyRing:
    return KeyRing(kek, store, clock_fn=clock, ttl_seconds=300)


# --- LocalKeyProvider -------------------------------------------------------------------


def test_wrap_unwrap_round_trip() -> None:
    kek = provider("k1")
    data_key = secrets.token_bytes(32)
    wrapped = kek.wrap(data_key, context=b"ctx")
    assert wrapped.kek_id == "k1"
    assert data_key not in wrapped.ciphertext
    assert kek.unwrap(wrapped, context=b"ctx") == data_key


def test_unwrap_refuses_wrong_context_unknown_kek_and_tampering() -> None:
    kek = provider("k1")
    wrapped = kek.wrap(secrets.token_bytes(32), context=data_key_context(SCHOOL, 1))
    with pytest.raises(KeyUnwrapError):
        kek.unwrap(wrapped, context=data_key_context(SCHOOL, 2))
    with pytest.raises(KeyUnwrapError):
        kek.unwrap(wrapped, context=data_key_context(OTHER, 1))
    with pytest.raises(KeyUnwrapError):
        provider("k2").unwrap(wrapped, context=data_key_context(SCHOOL, 1))
    flipped = bytes([wrapped.ciphertext[0] ^ 1]) + wrapped.ciphertext[1:]
    with pytest.raises(KeyUnwrapError):
        kek.unwrap(WrappedKey("k1", flipped), context=data_key_context(SCHOOL, 1))


@pytest.mark.parametrize(
    "key",
    [
        b"",
        secrets.token_bytes(16),
        secrets.token_bytes(31),
        secrets.token_bytes(33),
        bytes(32),
        b"\xff" * 32,
        b"changemechangemechangemechangeme",
        b"0123456789abcdef0123456789abcdef",
        bytes(range(8)) * 4,
    ],
    ids=["empty", "16", "31", "33", "zero", "ones", "changeme", "hex-text", "pattern"],
)
def test_refuses_short_long_and_placeholder_keks(key: bytes) -> None:
    with pytest.raises(KeyConfigError):
        LocalKeyProvider({"k1": key}, "k1")


def test_refuses_current_kek_missing_and_bad_kek_ids() -> None:
    with pytest.raises(KeyConfigError, match="current"):
        LocalKeyProvider({"k1": secrets.token_bytes(32)}, "k2")
    with pytest.raises(KeyConfigError, match="id"):
        LocalKeyProvider({"bad id!": secrets.token_bytes(32)}, "bad id!")


# --- env secrets ------------------------------------------------------------------------


def test_env_secret_bare_base64_is_one_kek_named_env() -> None:
    kek = LocalKeyProvider.from_env_secret(f"  {b64(secrets.token_bytes(32))}\n")
    assert kek.current_kek_id == ENV_KEK_ID
    assert kek.kek_ids == {ENV_KEK_ID}


def test_env_secret_with_ids_and_current() -> None:
    one, two = b64(secrets.token_bytes(32)), b64(secrets.token_bytes(32))
    kek = LocalKeyProvider.from_env_secret(f"k1:{one}, k2:{two} ; current=k2")
    assert kek.current_kek_id == "k2"
    assert kek.kek_ids == {"k1", "k2"}
    assert LocalKeyProvider.from_env_secret(f"k1:{one}").current_kek_id == "k1"


def test_env_secret_keys_decrypt_what_the_same_keys_wrapped() -> None:
    key = b64(secrets.token_bytes(32))
    wrapped = LocalKeyProvider.from_env_secret(key).wrap(bytes(range(32)), context=b"c")
    secret = f"other:{b64(secrets.token_bytes(32))},env:{key};current=other"
    again = LocalKeyProvider.from_env_secret(secret)
    assert again.unwrap(wrapped, context=b"c") == bytes(range(32))


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "   ",
        "changeme",
        "CHANGE_ME",
        "not base64!!",
        b64(bytes(32)),
        b64(b"x" * 32),
        b64(secrets.token_bytes(24)),
        f"k1:{b64(secrets.token_bytes(32))},k2:{b64(secrets.token_bytes(32))}",
        f"k1:{b64(secrets.token_bytes(32))};current=k9",
        f"k1:{b64(secrets.token_bytes(32))};newest=k1",
        f"k1:{b64(secrets.token_bytes(32))};current=",
        f"k1:{b64(secrets.token_bytes(32))},k1:{b64(secrets.token_bytes(32))};current=k1",
        f"{b64(secrets.token_bytes(32))},{b64(secrets.token_bytes(32))}",
    ],
)
def test_env_secret_refuses_bad_secrets(secret: str) -> None:
    with pytest.raises(KeyConfigError):
        LocalKeyProvider.from_env_secret(secret)


@pytest.mark.parametrize(
    "secret",
    ["k1:c2VjcmV0LXZhbHVl!!", "c2VjcmV0LXZhbHVl!!", "k1:AAAA,c2VjcmV0LXZhbHVl", "c2VjcmV0LXZhbHVl"],
)
def test_env_secret_errors_do_not_echo_the_secret(secret: str) -> None:
    with pytest.raises(KeyConfigError) as caught:
        LocalKeyProvider.from_env_secret(secret)
    assert "c2VjcmV0" not in str(caught.value)


# --- key files --------------------------------------------------------------------------


def test_generate_file_writes_0600_and_from_file_loads_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    generated = LocalKeyProvider.generate_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]
    loaded = LocalKeyProvider.from_file(path)
    assert loaded.current_kek_id == generated.current_kek_id
    wrapped = generated.wrap(bytes(range(32)), context=b"c")
    assert loaded.unwrap(wrapped, context=b"c") == bytes(range(32))


def test_generate_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    first = LocalKeyProvider.generate_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyConfigError, match="overwrite"):
        LocalKeyProvider.generate_file(path)
    assert path.read_bytes() == before
    assert LocalKeyProvider.from_file(path).current_kek_id == first.current_kek_id
    assert [p.name for p in tmp_path.iterdir()] == ["kek.json"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_from_file_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek.json"
    LocalKeyProvider.generate_file(path)
    path.chmod(mode)
    with pytest.raises(KeyConfigError, match="chmod 600"):
        LocalKeyProvider.from_file(path)


def test_from_file_accepts_0400(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    LocalKeyProvider.generate_file(path)
    path.chmod(0o400)
    assert LocalKeyProvider.from_file(path).kek_ids


def write_key_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_from_file_reads_several_keks(tmp_path: Path) -> None:
    keys = {"old": b64(secrets.token_bytes(32)), "new": b64(secrets.token_bytes(32))}
    text = json.dumps({"format": 1, "current": "new", "keys": keys})
    kek = LocalKeyProvider.from_file(write_key_file(tmp_path / "kek.json", text))
    assert kek.current_kek_id == "new"
    assert kek.kek_ids == {"old", "new"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        json.dumps({"current": "k1", "keys": {"k1": b64(secrets.token_bytes(32))}}),
        json.dumps({"format": 1, "current": "k1", "keys": {}}),
        json.dumps({"format": 1, "keys": {"k1": b64(secrets.token_bytes(32))}}),
        json.dumps({"format": 1, "current": "k1", "keys": {"k1": 5}}),
        json.dumps({"format": 1, "current": "k1", "keys": {"k1": "changeme"}}),
        json.dumps({"format": 1, "current": "k1", "keys": {"k1": b64(bytes(32))}}),
        json.dumps({"format": 1, "current": "k2", "keys": {"k1": b64(secrets.token_bytes(32))}}),
    ],
)
def test_from_file_refuses_malformed_files(tmp_path: Path, text: str) -> None:
    with pytest.raises(KeyConfigError):
        LocalKeyProvider.from_file(write_key_file(tmp_path / "kek.json", text))


def test_from_file_missing_or_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="cannot open"):
        LocalKeyProvider.from_file(tmp_path / "absent.json")
    with pytest.raises(KeyConfigError):
        LocalKeyProvider.from_file(tmp_path)


# --- KeyRing: creation, versions, rotation ----------------------------------------------


def test_encryption_key_creates_version_1_once(ring: KeyRing, store: InMemoryDataKeyStore) -> None:
    version, key = ring.encryption_key(SCHOOL)
    assert version == 1
    assert len(key) == 32
    assert ring.encryption_key(SCHOOL) == (1, key)
    assert [k.version for k in store.versions(SCHOOL)] == [1]
    assert ring.decryption_key(SCHOOL, 1) == key


def test_another_keyring_on_the_same_store_gets_the_same_key(
    ring: KeyRing, kek: LocalKeyProvider, store: InMemoryDataKeyStore
) -> None:
    _, key = ring.encryption_key(SCHOOL)
    other = KeyRing(kek, store)
    assert other.decryption_key(SCHOOL, 1) == key
    assert other.encryption_key(SCHOOL) == (1, key)


def test_schools_get_different_keys(ring: KeyRing) -> None:
    assert ring.encryption_key(SCHOOL)[1] != ring.encryption_key(OTHER)[1]


def test_unknown_versions_and_schools(ring: KeyRing) -> None:
    ring.encryption_key(SCHOOL)
    for version in (0, 2, 2**32):
        with pytest.raises(UnknownKeyVersionError):
            ring.decryption_key(SCHOOL, version)
    with pytest.raises(UnknownKeyVersionError):
        ring.decryption_key(OTHER, 1)


def test_bad_school_ids_are_refused(ring: KeyRing) -> None:
    for school_id in ("", "x" * 257, "sch\n1"):
        with pytest.raises(ValueError, match="school_id"):
            ring.encryption_key(school_id)


def test_rotate_makes_a_new_version_for_writes_and_keeps_old_ones(ring: KeyRing) -> None:
    _, first = ring.encryption_key(SCHOOL)
    assert ring.rotate_data_key(SCHOOL) == 2
    version, second = ring.encryption_key(SCHOOL)
    assert (version, second != first) == (2, True)
    assert ring.decryption_key(SCHOOL, 1) == first
    assert ring.decryption_key(SCHOOL, 2) == second


def test_rotate_before_any_key_creates_version_1(ring: KeyRing) -> None:
    assert ring.rotate_data_key(SCHOOL) == 1


def test_rotation_elsewhere_reaches_writes_after_the_ttl(
    ring: KeyRing, kek: LocalKeyProvider, store: InMemoryDataKeyStore, clock: FakeMonotonic
) -> None:
    ring.encryption_key(SCHOOL)
    KeyRing(kek, store).rotate_data_key(SCHOOL)
    assert ring.encryption_key(SCHOOL)[0] == 1
    clock.advance(300)
    assert ring.encryption_key(SCHOOL)[0] == 2


def test_concurrent_first_writes_agree_on_one_key(store: InMemoryDataKeyStore) -> None:
    kek = provider("k1")
    rings = [KeyRing(kek, store) for _ in range(8)]
    results: list[tuple[int, bytes]] = []
    barrier = threading.Barrier(len(rings))

    def first_write(r: KeyRing) -> None:
        barrier.wait()
        results.append(r.encryption_key(SCHOOL))

    threads = [threading.Thread(target=first_write, args=(r,)) for r in rings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert len(store.versions(SCHOOL)) == 1


# --- KeyRing: cache -------------------------------------------------------------------


def test_cached_key_outlives_a_shred_elsewhere_only_until_the_ttl(
    ring: KeyRing, store: InMemoryDataKeyStore, clock: FakeMonotonic
) -> None:
    _, key = ring.encryption_key(SCHOOL)
    store.destroy(SCHOOL)  # another process shreds: this ring still holds the key
    clock.advance(299)
    assert ring.decryption_key(SCHOOL, 1) == key
    clock.advance(1)
    with pytest.raises(KeyShreddedError):
        ring.decryption_key(SCHOOL, 1)
    with pytest.raises(KeyShreddedError):
        ring.encryption_key(SCHOOL)


def test_ttl_counts_from_unwrapping_not_from_last_use(
    ring: KeyRing, store: InMemoryDataKeyStore, clock: FakeMonotonic
) -> None:
    ring.encryption_key(SCHOOL)
    store.destroy(SCHOOL)
    for step in range(1, 4):
        clock.advance(100)
        expect: AbstractContextManager[object] = (
            pytest.raises(KeyShreddedError) if step == 3 else nullcontext()
        )
        with expect:
            ring.decryption_key(SCHOOL, 1)


def test_cache_is_bounded_least_recently_used_first(
    kek: LocalKeyProvider, store: InMemoryDataKeyStore
) -> None:
    writer = KeyRing(kek, store)
    for school_id in (SCHOOL, OTHER, "sch_0003"):
        writer.encryption_key(school_id)
    ring = KeyRing(kek, store, max_entries=2)
    ring.decryption_key(SCHOOL, 1)
    ring.decryption_key(OTHER, 1)
    ring.decryption_key(SCHOOL, 1)  # SCHOOL is now the most recently used
    ring.decryption_key("sch_0003", 1)  # a third entry: OTHER's is evicted
    store.destroy(SCHOOL)
    store.destroy(OTHER)
    assert len(ring.decryption_key(SCHOOL, 1)) == 32
    with pytest.raises(KeyShreddedError):
        ring.decryption_key(OTHER, 1)


def test_keyring_settings_are_checked(store: InMemoryDataKeyStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        KeyRing(provider("k1"), store, ttl_seconds=0)
    with pytest.raises(ValueError, match="positive"):
        KeyRing(provider("k1"), store, max_entries=0)


# --- KeyRing: shredding -----------------------------------------------------------------


def test_shred_takes_effect_at_once_even_for_cached_keys(ring: KeyRing) -> None:
    ring.encryption_key(SCHOOL)
    ring.rotate_data_key(SCHOOL)
    _, other_key = ring.encryption_key(OTHER)
    ring.shred(SCHOOL)
    for version in (1, 2):
        with pytest.raises(KeyShreddedError):
            ring.decryption_key(SCHOOL, version)
    assert ring.decryption_key(OTHER, 1) == other_key


def test_a_shredded_school_is_never_given_a_new_key(
    ring: KeyRing, store: InMemoryDataKeyStore, clock: FakeMonotonic
) -> None:
    ring.encryption_key(SCHOOL)
    ring.shred(SCHOOL)
    with pytest.raises(KeyShreddedError):
        ring.encryption_key(SCHOOL)
    with pytest.raises(KeyShreddedError):
        ring.rotate_data_key(SCHOOL)
    with pytest.raises(KeyShreddedError):
        KeyRing(provider("k1"), store, clock_fn=clock).encryption_key(SCHOOL)
    assert store.versions(SCHOOL) == []


def test_shred_of_a_school_without_keys_still_blocks_it(ring: KeyRing) -> None:
    ring.shred(SCHOOL)
    with pytest.raises(KeyShreddedError):
        ring.decryption_key(SCHOOL, 1)
    with pytest.raises(KeyShreddedError):
        ring.encryption_key(SCHOOL)


# --- KeyRing: KEK rotation --------------------------------------------------------------


def test_kek_rotation_rewraps_data_keys_and_retires_the_old_kek(
    store: InMemoryDataKeyStore,
) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = KeyRing(LocalKeyProvider({"k1": old}, "k1"), store)
    keys = {s: before.encryption_key(s)[1] for s in (SCHOOL, OTHER)}
    before.rotate_data_key(SCHOOL)
    v2 = before.decryption_key(SCHOOL, 2)

    during = KeyRing(LocalKeyProvider({"k1": old, "k2": new}, "k2"), store)
    assert during.rewrap_all("k2", batch_size=2) == 3
    assert during.rewrap_all("k2") == 0
    assert {k.wrapped.kek_id for s in (SCHOOL, OTHER) for k in store.versions(s)} == {"k2"}

    after = KeyRing(LocalKeyProvider({"k2": new}, "k2"), store)
    assert after.decryption_key(SCHOOL, 1) == keys[SCHOOL]
    assert after.decryption_key(SCHOOL, 2) == v2
    assert after.decryption_key(OTHER, 1) == keys[OTHER]
    with pytest.raises(KeyUnwrapError):
        KeyRing(LocalKeyProvider({"k1": old}, "k1"), store).decryption_key(SCHOOL, 1)


def test_rewrap_school_only_touches_that_school(store: InMemoryDataKeyStore) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = KeyRing(LocalKeyProvider({"k1": old}, "k1"), store)
    before.encryption_key(SCHOOL)
    before.encryption_key(OTHER)
    rotated = KeyRing(LocalKeyProvider({"k1": old, "k2": new}, "k2"), store)
    assert rotated.rewrap_school(SCHOOL) == 1
    assert rotated.rewrap_school(SCHOOL) == 0
    assert store.versions(SCHOOL)[0].wrapped.kek_id == "k2"
    assert store.versions(OTHER)[0].wrapped.kek_id == "k1"


def test_rewrap_all_refuses_a_kek_that_is_not_current(ring: KeyRing) -> None:
    with pytest.raises(KeyConfigError, match="current KEK"):
        ring.rewrap_all("k2")


def test_new_data_keys_are_wrapped_by_the_current_kek(store: InMemoryDataKeyStore) -> None:
    ring = KeyRing(provider("k1", "k2", current="k2"), store)
    ring.encryption_key(SCHOOL)
    assert store.versions(SCHOOL)[0].wrapped.kek_id == "k2"


def test_data_key_context_is_unambiguous() -> None:
    assert data_key_context("a:v1", 2) != data_key_context("a", 12)
    assert data_key_context("a:v1", 2) == b"school:a:v1:v2"
    contexts = {data_key_context(s, v) for s in ("a", "a:v", "a:v1", "a:v1:v") for v in (1, 12)}
    assert len(contexts) == 8


class ForgetfulStore(InMemoryDataKeyStore):
    """A broken store that drops rewraps: the KEK job must stop, not spin."""

    def replace_wrapping(self, school_id: str, version: int, wrapped: WrappedKey) -> None:
        return None


def test_rewrap_all_stops_when_the_store_drops_rewraps() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    store = ForgetfulStore()
    KeyRing(LocalKeyProvider({"k1": old}, "k1"), store).encryption_key(SCHOOL)
    rotating = KeyRing(LocalKeyProvider({"k1": old, "k2": new}, "k2"), store)
    with pytest.raises(KeyringError, match="did not keep"):
        rotating.rewrap_all("k2")
