"""Opaque names and keyed digests: what the cache stores outside ciphertext.

Redis keys, blob keys, ETags and cursors must not reveal a school, area or record, and a
plain hash would not do (record ids and field values have little entropy).  So every name
is an HMAC under a key derived with HKDF from a secret that the KeyRing holds:

- a server-wide naming secret, stored as the data key of a reserved owner id, wrapped by
  the KEK like any school's key (so it is shared by every process, survives restarts and
  is rewrapped when the KEK rotates); it names hot pages, blob prefixes and seals cursors;
- per school, version 1 of the school's own data key (present for as long as the school
  has any key), for record keys and change-detection digests: after a shred nothing can
  link a digest to a value any more.  Using v1, not the current version, keeps digests
  stable across data-key rotations, so a rotation does not mark every record changed.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cache.keys import KeyRing, UnknownKeyVersionError

NAMING_KEY_OWNER: Final = "~misbroker.cache-naming"
_NAME_HEX: Final = 32  # 128 bits: collisions are not a concern at any realistic size
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def derive(key: bytes, label: str) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=label.encode()).derive(key)


def _mac_hex(key: bytes, parts: Iterable[Any]) -> str:
    # A JSON array is an unambiguous encoding of the parts ("ab","c" differs from "a","bc").
    message = orjson.dumps(list(parts))
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:_NAME_HEX]


def _first_key(keyring: KeyRing, owner: str) -> bytes:
    """Version 1 of the owner's data key, created if the owner has none yet."""
    try:
        return keyring.decryption_key(owner, 1)
    except UnknownKeyVersionError:
        keyring.encryption_key(owner)
        return keyring.decryption_key(owner, 1)


class Namer:
    """Server-wide opaque names; derives its keys once, on first use."""

    def __init__(self, keyring: KeyRing) -> None:
        self._keyring = keyring
        self._keys: tuple[bytes, bytes, AESGCM] | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Load (or create) the naming secret now.

        Call before taking a write lock: creating the secret writes through the key store's
        own connection, which on SQLite would queue behind this transaction's lock and fail.
        """
        self._derived()

    @property
    def ready(self) -> bool:
        """Whether the names can be made without I/O (the secret is loaded)."""
        return self._keys is not None

    def _derived(self) -> tuple[bytes, bytes, AESGCM]:
        with self._lock:
            if self._keys is None:
                root = _first_key(self._keyring, NAMING_KEY_OWNER)
                cursor = AESGCM(derive(root, "misbroker.cursor.v1"))
                self._keys = (
                    derive(root, "misbroker.names.v1"),
                    derive(root, "misbroker.etag.v1"),
                    cursor,
                )
            return self._keys

    def hot_key(self, *parts: Any) -> str:
        """The Redis key of a hot page; `parts` is everything the page body depends on."""
        return "mb:h:" + _mac_hex(self._derived()[0], ("page", *parts))

    def hot_index_key(self, school_id: str, area: str) -> str:
        return "mb:i:" + _mac_hex(self._derived()[0], ("index", school_id, area))

    def blob_prefix(self, school_id: str, area: str) -> str:
        """Every blob of one area (bundle, photos) lives under this prefix."""
        return _mac_hex(self._derived()[0], ("blobs", school_id, area)) + "/"

    def etag(self, *parts: Any) -> str:
        return '"' + _mac_hex(self._derived()[1], parts) + '"'

    @property
    def cursor_aead(self) -> AESGCM:
        return self._derived()[2]


class _PrekeyedHmacSha256:
    """HMAC-SHA256 under one key, from SHA-256 states already fed the padded key (RFC 2104).

    The same digests as `hmac.new(key, msg, sha256)`.  Keying anew hashes two blocks
    before the message, and `hmac.HMAC.copy()` adds Python-level wrapper calls: every record
    of an upload takes two digests, and copying two hashlib states is a third of the cost.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class SchoolMacs:
    """Keyed digests of one school's record ids and record contents."""

    __slots__ = ("_content", "_record_key")

    def __init__(self, record_key_mac: bytes, content_mac: bytes) -> None:
        self._record_key = _PrekeyedHmacSha256(record_key_mac)
        self._content = _PrekeyedHmacSha256(content_mac)

    def record_key(self, record_id: str) -> str:
        return self._record_key.digest(record_id.encode()).hex()[:_NAME_HEX]

    def content_hash(self, canonical: bytes) -> bytes:
        return self._content.digest(canonical)[:16]


def school_macs(keyring: KeyRing, school_id: str) -> SchoolMacs:
    """The school's MAC keys; creates its first data key if needed, so call before locking."""
    root = _first_key(keyring, school_id)
    return SchoolMacs(derive(root, "misbroker.record-key.v1"), derive(root, "misbroker.content.v1"))


def instant_key(at: datetime | None) -> int | None:
    """A datetime as integer microseconds since the epoch, for names and cursors."""
    if at is None:
        return None
    return (at - _EPOCH) // _MICROSECOND


def from_instant_key(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND
