"""Envelope-encryption keys: the KEK port, the wrapped data-key store port and the KeyRing.

Each school has versioned 256-bit data keys.  A data key is persisted only wrapped by a
key-encryption key (KEK) that a `KeyProvider` holds (a local key file or an env secret now,
KMS or Vault later).  The `KeyRing` unwraps data keys on demand and keeps them in memory for
a short time; destroying a school's wrapped data keys (`KeyRing.shred`) leaves every
ciphertext of that school unreadable.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MAX_KEY_VERSION: Final = 2**32 - 1  # ciphertext headers store the version as a uint32
MAX_ID_LENGTH: Final = 256
KEY_FILE_FORMAT: Final = 1
ENV_KEK_ID: Final = "env"  # the id a bare base64 env secret gets
_KEK_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CURRENT: Final = 0  # cache slot of a school's write key; stored versions start at 1


class KeyringError(Exception):
    """Base class of key-management failures."""


class KeyConfigError(KeyringError):
    """A KEK, key file or key secret is missing, malformed or unsafe."""


class KeyUnwrapError(KeyringError):
    """A wrapped key did not unwrap: unknown KEK, wrong context, or tampered."""


class KeyShreddedError(KeyringError):
    """The school's data keys were destroyed, so its ciphertexts are unreadable for good."""


class UnknownKeyVersionError(KeyringError):
    """The school has no data key with this version."""


class DataKeyConflictError(KeyringError):
    """A data key with this school and version is already stored."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under the KEK `kek_id`; opaque to everything but its provider."""

    kek_id: str
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class StoredDataKey:
    school_id: str
    version: int
    wrapped: WrappedKey


class KeyProvider(Protocol):
    """The KEK port: wraps and unwraps data keys and never reveals a KEK."""

    @property
    def current_kek_id(self) -> str: ...

    def wrap(self, plaintext_key: bytes, *, context: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes: ...


class DataKeyStore(Protocol):
    """The repository of wrapped data keys.

    Contract for implementations (the SQL one included): (school_id, version) is unique and
    `add` raises `DataKeyConflictError` on a duplicate; `destroy` really deletes every
    version (no soft delete) and records a tombstone, after which `is_shredded` is true and
    `add` raises `KeyShreddedError`; `replace_wrapping` of a missing key does nothing.
    """

    def get(self, school_id: str, version: int) -> StoredDataKey | None: ...

    def current(self, school_id: str) -> StoredDataKey | None: ...

    def add(self, key: StoredDataKey) -> None: ...

    def replace_wrapping(self, school_id: str, version: int, wrapped: WrappedKey) -> None: ...

    def destroy(self, school_id: str) -> None: ...

    def is_shredded(self, school_id: str) -> bool: ...

    def versions(self, school_id: str) -> Sequence[StoredDataKey]: ...

    def wrapped_by_other_kek(self, kek_id: str, *, limit: int) -> Sequence[StoredDataKey]: ...


def check_id(name: str, value: str) -> None:
    """Refuse empty, overlong or unprintable ids before they reach associated data."""
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise ValueError(f"{name} must be 1-{MAX_ID_LENGTH} printable characters")


def data_key_context(school_id: str, version: int) -> bytes:
    """The associated data binding a wrapped data key to its school and version.

    Readable on purpose, because KMS audit logs show it, and still unambiguous: the version
    is the digits after the last ":v", and digits hold no ":".
    """
    return b"school:" + school_id.encode() + b":v" + str(version).encode()


def check_kek(kek_id: str, key: bytes) -> None:
    """Refuse a KEK with a bad id, the wrong length, or bytes that are plainly not random."""
    if not _KEK_ID_RE.match(kek_id):
        raise KeyConfigError(f"KEK id {kek_id!r} must match {_KEK_ID_RE.pattern}")
    if len(key) != KEY_BYTES:
        raise KeyConfigError(f"KEK {kek_id!r} is {len(key)} bytes; it must be exactly 32")
    if _looks_like_placeholder(key):
        raise KeyConfigError(
            f"KEK {kek_id!r} is not random (zeros, a repeated pattern or typed text); "
            "generate one with: python -c 'import base64, secrets; "
            "print(base64.b64encode(secrets.token_bytes(32)).decode())'"
        )


def _looks_like_placeholder(key: bytes) -> bool:
    """True for keys someone typed or left as a default instead of generating.

    32 random bytes are all printable ASCII with probability (95/256)**32, about 1e-14, and
    have fewer than 16 distinct values far less often than that, so no real key is refused.
    """
    return len(set(key)) < 16 or all(0x20 <= b < 0x7F for b in key)


def new_kek_id() -> str:
    return "kek-" + secrets.token_hex(4)


class LocalKeyProvider:
    """KEKs held in this process, from a key file or an env secret; AES-256-GCM key wrap.

    A wrapped key is a random 96-bit nonce followed by the GCM ciphertext and tag of the
    data key, with the caller's context as associated data.
    """

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise KeyConfigError(f"current KEK {current!r} is not among the keys given")
        for kek_id, key in keys.items():
            check_kek(kek_id, key)
        self._aeads = {kek_id: AESGCM(key) for kek_id, key in keys.items()}
        self._current = current

    @property
    def current_kek_id(self) -> str:
        return self._current

    @property
    def kek_ids(self) -> frozenset[str]:
        return frozenset(self._aeads)

    def wrap(self, plaintext_key: bytes, *, context: bytes) -> WrappedKey:
        if len(plaintext_key) != KEY_BYTES:
            raise ValueError("data keys are 32 bytes")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[self._current].encrypt(nonce, plaintext_key, context)
        return WrappedKey(self._current, nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        aead = self._aeads.get(wrapped.kek_id)
        if aead is None:
            raise KeyUnwrapError(f"KEK {wrapped.kek_id!r} is not configured")
        blob = wrapped.ciphertext
        if len(blob) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
            raise KeyUnwrapError("wrapped key has the wrong length")
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context)
        except InvalidTag:
            raise KeyUnwrapError("wrapped key failed authentication") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Load a key file, refusing it unless only its owner may read it.

        The file is JSON: {"format": 1, "current": "<kek id>", "keys": {"<kek id>": "<base64
        of 32 bytes>", ...}}.  Keep retired KEKs in it until `KeyRing.rewrap_all` has run.
        """
        keys, current = _parse_key_file(_read_private_file(Path(path)))
        return cls(keys, current)

    @classmethod
    def generate_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        """Write a new key file with one fresh KEK (mode 0600, never overwriting) and load it."""
        kek_id = new_kek_id()
        key = secrets.token_bytes(KEY_BYTES)
        document = {
            "format": KEY_FILE_FORMAT,
            "current": kek_id,
            "keys": {kek_id: base64.b64encode(key).decode()},
        }
        _write_new_private_file(Path(path), json.dumps(document, indent=2) + "\n")
        return cls.from_file(path)

    @classmethod
    def from_env_secret(cls, secret: str) -> LocalKeyProvider:
        """Load KEKs from one secret string (e.g. an env var).

        Either a bare base64 key (its id is "env"), or "<id>:<base64>[,<id>:<base64>...]"
        with ";current=<id>" appended when there is more than one key.  Base64 never holds
        ":", "," or ";", so the split is unambiguous.
        """
        keys, current = _parse_env_secret(secret)
        return cls(keys, current)


def _b64_key(kek_id: str, text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        # Never echo the text: it is (a mangled form of) the secret.
        raise KeyConfigError(f"KEK {kek_id!r} is not valid base64") from None


def _parse_env_secret(secret: str) -> tuple[dict[str, bytes], str]:
    body, has_current, tail = secret.strip().partition(";")
    if not body:
        raise KeyConfigError("KEK secret is empty")
    entries = [entry.strip() for entry in body.split(",")]
    if len(entries) == 1 and ":" not in entries[0]:
        keys = {ENV_KEK_ID: _b64_key(ENV_KEK_ID, entries[0])}
    else:
        keys = _parse_env_entries(entries)
    if has_current:
        return keys, _parse_current(tail)
    if len(keys) != 1:
        raise KeyConfigError("KEK secret holds several keys; append ';current=<id>'")
    return keys, next(iter(keys))


def _parse_env_entries(entries: Iterable[str]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for entry in entries:
        kek_id, colon, text = entry.partition(":")
        kek_id = kek_id.strip()
        if not colon:
            # Without a colon the "id" is the key itself: do not echo it.
            raise KeyConfigError("KEK secret entries must be '<id>:<base64>'")
        if kek_id in keys:
            raise KeyConfigError(f"KEK id {kek_id!r} is repeated in the secret")
        keys[kek_id] = _b64_key(kek_id, text)
    return keys


def _parse_current(tail: str) -> str:
    name, equals, value = tail.partition("=")
    if name.strip() != "current" or not equals or not value.strip():
        raise KeyConfigError("KEK secret must end with ';current=<id>'")
    return value.strip()


def _read_private_file(path: Path) -> str:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise KeyConfigError(f"cannot open key file {path}: {exc.strerror}") from exc
    with handle:
        # fstat the open file, not the path, so the file checked is the file read.
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise KeyConfigError(f"key file {path} is not a regular file")
        if mode & 0o077:
            raise KeyConfigError(
                f"key file {path} has mode {stat.S_IMODE(mode):04o}; it must be readable "
                f"by its owner only: chmod 600 {path}"
            )
        return handle.read()


def _parse_key_file(text: str) -> tuple[dict[str, bytes], str]:
    try:
        document: Any = json.loads(text)
    except ValueError:
        raise KeyConfigError("key file is not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
        raise KeyConfigError(f'key file must be a JSON object with "format": {KEY_FILE_FORMAT}')
    keys, current = document.get("keys"), document.get("current")
    if not isinstance(keys, dict) or not keys or not isinstance(current, str):
        raise KeyConfigError('key file needs "current" and a non-empty "keys" object')
    if not all(isinstance(value, str) for value in keys.values()):
        raise KeyConfigError('key file "keys" values must be base64 strings')
    return {str(kek_id): _b64_key(str(kek_id), value) for kek_id, value in keys.items()}, current


def _write_new_private_file(path: Path, text: str) -> None:
    """Write `text` to a new file at `path` with mode 0600, atomically and durably.

    The text goes to a temporary file that is then hard-linked into place: a crash leaves
    no half-written key file, and an existing key file is never replaced (losing a KEK
    loses every school's data).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        raise KeyConfigError(f"refusing to overwrite existing key file {path}") from None
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class InMemoryDataKeyStore:
    """A `DataKeyStore` in a dict, for tests and single-process tools."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[int, StoredDataKey]] = {}
        self._shredded: set[str] = set()
        self._lock = threading.Lock()

    def get(self, school_id: str, version: int) -> StoredDataKey | None:
        with self._lock:
            return self._keys.get(school_id, {}).get(version)

    def current(self, school_id: str) -> StoredDataKey | None:
        with self._lock:
            versions = self._keys.get(school_id)
            return versions[max(versions)] if versions else None

    def add(self, key: StoredDataKey) -> None:
        with self._lock:
            if key.school_id in self._shredded:
                raise KeyShreddedError(f"school {key.school_id!r} was shredded")
            versions = self._keys.setdefault(key.school_id, {})
            if key.version in versions:
                raise DataKeyConflictError(f"{key.school_id!r} v{key.version} exists")
            versions[key.version] = key

    def replace_wrapping(self, school_id: str, version: int, wrapped: WrappedKey) -> None:
        with self._lock:
            versions = self._keys.get(school_id, {})
            if version in versions:
                versions[version] = replace(versions[version], wrapped=wrapped)

    def destroy(self, school_id: str) -> None:
        with self._lock:
            self._keys.pop(school_id, None)
            self._shredded.add(school_id)

    def is_shredded(self, school_id: str) -> bool:
        with self._lock:
            return school_id in self._shredded

    def versions(self, school_id: str) -> list[StoredDataKey]:
        with self._lock:
            versions = self._keys.get(school_id, {})
            return [versions[v] for v in sorted(versions)]

    def wrapped_by_other_kek(self, kek_id: str, *, limit: int) -> list[StoredDataKey]:
        with self._lock:
            every = (key for versions in self._keys.values() for key in versions.values())
            return [key for key in every if key.wrapped.kek_id != kek_id][:limit]


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    key: bytes
    aead: AESGCM
    expires_at: float


class KeyRing:
    """Creates, rotates, rewraps and shreds schools' data keys; caches unwrapped ones briefly.

    The cache is LRU-bounded and entries expire `ttl_seconds` after they were unwrapped,
    however often they are used.  That bound is also how long another process may keep
    decrypting after a shred here, or keep writing with the older version after a rotation
    here; in this process both take effect at once.  Each entry holds a ready `AESGCM`, so
    sealing many records does not rebuild the cipher per record.  Python cannot wipe bytes,
    so "dropping" a key means dropping every reference this class holds to it.
    """

    def __init__(
        self,
        provider: KeyProvider,
        store: DataKeyStore,
        clock_fn: Callable[[], float] = time.monotonic,
        ttl_seconds: float = 300.0,
        max_entries: int = 10_000,
    ) -> None:
        if ttl_seconds <= 0 or max_entries < 1:
            raise ValueError("ttl_seconds and max_entries must be positive")
        self._provider = provider
        self._store = store
        self._clock = clock_fn
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._cache: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._shredded: set[str] = set()
        self._lock = threading.Lock()

    def encryption_key(self, school_id: str) -> tuple[int, bytes]:
        """The school's current data key and its version, creating version 1 if it has none."""
        entry = self._write_entry(school_id)
        return entry.version, entry.key

    def decryption_key(self, school_id: str, version: int) -> bytes:
        return self._read_entry(school_id, version).key

    def encryption_aead(self, school_id: str) -> tuple[int, AESGCM]:
        entry = self._write_entry(school_id)
        return entry.version, entry.aead

    def decryption_aead(self, school_id: str, version: int) -> AESGCM:
        return self._read_entry(school_id, version).aead

    def holds(self, school_id: str, version: int) -> bool:
        """Whether that key is unwrapped in memory now: using it then needs no I/O."""
        return self._cached(school_id, version) is not None

    def rotate_data_key(self, school_id: str) -> int:
        """Create the school's next data-key version and use it for new writes at once."""
        check_id("school_id", school_id)
        current = self._store.current(school_id)
        version = 1 if current is None else current.version + 1
        if version > MAX_KEY_VERSION:
            raise KeyConfigError(f"school {school_id!r} has used every data-key version")
        return self._remember(self._create(school_id, version), as_current=True).version

    def rewrap_school(self, school_id: str) -> int:
        """Rewrap the school's data keys under the current KEK; return how many changed."""
        return sum(self._rewrap(key) for key in self._store.versions(school_id))

    def rewrap_all(
        self,
        new_kek_id: str,
        *,
        batch_size: int = 500,
        on_rewrapped: Callable[[int], object] | None = None,
    ) -> int:
        """Rewrap every data key not yet under `new_kek_id`; idempotent, data untouched.

        `on_rewrapped` hears how many keys each batch rewrapped (the CLI's progress bar).

        `new_kek_id` must be the provider's current KEK, so that a worker still configured
        with the old KEK refuses the job instead of "rotating" back to it.
        """
        if new_kek_id != self._provider.current_kek_id:
            raise KeyConfigError(
                f"asked to rewrap under {new_kek_id!r} but the current KEK is "
                f"{self._provider.current_kek_id!r}"
            )
        done: set[tuple[str, int]] = set()
        while batch := self._store.wrapped_by_other_kek(new_kek_id, limit=batch_size):
            for key in batch:
                if (key.school_id, key.version) in done:
                    # Without this a store that drops rewraps would keep the job looping forever.
                    raise KeyringError(f"store did not keep the rewrap of {key.school_id!r}")
                self._rewrap(key)
                done.add((key.school_id, key.version))
            if on_rewrapped is not None:
                on_rewrapped(len(batch))
        return len(done)

    def shred(self, school_id: str) -> None:
        """Destroy every data key of the school, then forget any copy held in memory.

        The store goes first so that a failed delete changes nothing.  The in-process mark
        stops a load that raced with the delete from caching the key again.
        """
        self._store.destroy(school_id)
        with self._lock:
            self._shredded.add(school_id)
            for cache_key in [k for k in self._cache if k[0] == school_id]:
                del self._cache[cache_key]

    def _write_entry(self, school_id: str) -> _Entry:
        return self._cached(school_id, _CURRENT) or self._load_current(school_id)

    def _read_entry(self, school_id: str, version: int) -> _Entry:
        if not 1 <= version <= MAX_KEY_VERSION:
            raise UnknownKeyVersionError(f"data-key version {version} is out of range")
        return self._cached(school_id, version) or self._load_version(school_id, version)

    def _cached(self, school_id: str, version: int) -> _Entry | None:
        cache_key = (school_id, version)
        with self._lock:
            entry = self._cache.get(cache_key)
            if entry is None:
                return None
            if entry.expires_at <= self._clock():
                del self._cache[cache_key]
                return None
            self._cache.move_to_end(cache_key)
            return entry

    def _load_current(self, school_id: str) -> _Entry:
        check_id("school_id", school_id)
        stored = self._store.current(school_id) or self._create(school_id, 1)
        return self._remember(stored, as_current=True)

    def _load_version(self, school_id: str, version: int) -> _Entry:
        check_id("school_id", school_id)
        stored = self._store.get(school_id, version)
        if stored is None:
            self._raise_missing(school_id, version)
        return self._remember(stored, as_current=False)

    def _raise_missing(self, school_id: str, version: int) -> NoReturn:
        if self._store.is_shredded(school_id):
            raise KeyShreddedError(f"school {school_id!r} was shredded")
        raise UnknownKeyVersionError(f"school {school_id!r} has no data-key version {version}")

    def _create(self, school_id: str, version: int) -> StoredDataKey:
        """Store a fresh data key as `version`; if another writer got there first, use theirs."""
        if self._store.is_shredded(school_id):
            # A shredded school stays shredded: new writes must not resurrect it.
            raise KeyShreddedError(f"school {school_id!r} was shredded")
        key = AESGCM.generate_key(bit_length=256)
        wrapped = self._provider.wrap(key, context=data_key_context(school_id, version))
        stored = StoredDataKey(school_id, version, wrapped)
        try:
            self._store.add(stored)
        except DataKeyConflictError:
            winner = self._store.current(school_id)
            if winner is None:
                raise
            return winner
        return stored

    def _remember(self, stored: StoredDataKey, *, as_current: bool) -> _Entry:
        context = data_key_context(stored.school_id, stored.version)
        key = self._provider.unwrap(stored.wrapped, context=context)
        if len(key) != KEY_BYTES:
            raise KeyUnwrapError("unwrapped data key is not 32 bytes")
        entry = _Entry(stored.version, key, AESGCM(key), self._clock() + self._ttl)
        with self._lock:
            if stored.school_id in self._shredded:
                raise KeyShreddedError(f"school {stored.school_id!r} was shredded")
            self._put((stored.school_id, stored.version), entry)
            if as_current:
                self._put_current(stored.school_id, entry)
        return entry

    def _put_current(self, school_id: str, entry: _Entry) -> None:
        # A slow load of an older version must not displace a newer one just rotated in.
        cached = self._cache.get((school_id, _CURRENT))
        if cached is None or cached.version <= entry.version:
            self._put((school_id, _CURRENT), entry)

    def _put(self, cache_key: tuple[str, int], entry: _Entry) -> None:
        self._cache[cache_key] = entry
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def _rewrap(self, stored: StoredDataKey) -> bool:
        current = self._provider.current_kek_id
        if stored.wrapped.kek_id == current:
            return False
        context = data_key_context(stored.school_id, stored.version)
        key = self._provider.unwrap(stored.wrapped, context=context)
        rewrapped = self._provider.wrap(key, context=context)
        if rewrapped.kek_id != current:
            raise KeyConfigError(f"provider wrapped under {rewrapped.kek_id!r}, not {current!r}")
        self._store.replace_wrapping(stored.school_id, stored.version, rewrapped)
        return True
