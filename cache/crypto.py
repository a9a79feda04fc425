"""Authenticated encryption of cached data: the ciphertext format and the slot it is bound to.

Format 1 (integers big-endian):

    offset  0   1 byte    format (0x01)
    offset  1   4 bytes   data-key version (uint32)
    offset  5   12 bytes  random nonce
    offset 17   n + 16    AES-256-GCM ciphertext and tag

The associated data is the 5-byte header followed by the slot's canonical bytes, so a blob
opens only in the slot (kind, school, area, record id, record version) it was sealed for,
and its header cannot be edited undetected.  Random 96-bit nonces are safe for 2**32 seals
per data key (NIST SP 800-38D); at a million seals a day a school reaches that in eleven
years, and `KeyRing.rotate_data_key` starts a fresh count.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final

import orjson
from cryptography.exceptions import InvalidTag

from cache.keys import NONCE_BYTES, TAG_BYTES, KeyRing, UnknownKeyVersionError, check_id
from consent.areas import get_area

FORMAT_V1: Final = 0x01
_HEADER: Final = struct.Struct(">BI")
_BODY_START: Final = _HEADER.size + NONCE_BYTES
MIN_BLOB_BYTES: Final = _BODY_START + TAG_BYTES
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


def _prefixed(text: str) -> bytes:
    data = text.encode()
    return _U32.pack(len(data)) + data


_SLOT_LABEL: Final = _prefixed("misbroker.slot.v1")


class CryptoError(Exception):
    """Base class of failures to open a sealed blob."""


class IntegrityError(CryptoError):
    """The blob is tampered, truncated, or belongs to another slot or school."""


class UnsupportedFormatError(CryptoError):
    """The blob's format byte is unknown here.

    Not an `IntegrityError`: during a rolling deploy a newer writer's blob is valid data,
    and callers must not discard it as corrupt.
    """


class SlotKind(StrEnum):
    RECORD = "record"  # one cached record (warm tier)
    PAGE = "page"  # a ready-to-serve page of records (hot tier)
    BLOB = "blob"  # a large binary such as a photo (cold tier)


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a ciphertext belongs; `associated_data` is its canonical, unambiguous encoding."""

    school_id: str
    area: str
    record_id: str
    record_version: int
    kind: SlotKind = SlotKind.RECORD
    associated_data: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.kind) is not SlotKind:
            object.__setattr__(self, "kind", SlotKind(self.kind))
        _check_record(self.record_id, self.record_version)
        # Every field is length-prefixed, so ("ab", "c") and ("a", "bc") never collide.
        encoded = (
            _slot_prefix(self.kind, self.school_id, self.area)
            + _prefixed(self.record_id)
            + _U64.pack(self.record_version)
        )
        object.__setattr__(self, "associated_data", encoded)


def _check_record(record_id: str, record_version: int) -> None:
    """What a slot's own fields must be before they reach associated data."""
    check_id("record_id", record_id)
    if not 0 <= record_version < 2**64:
        raise ValueError("record_version must fit in a uint64")


@functools.lru_cache(maxsize=4096)
def _slot_prefix(kind: SlotKind, school_id: str, area: str) -> bytes:
    """The start of a slot's encoding, checked once per school and area: an upload builds
    a slot for every record, and a read one for every record it opens."""
    get_area(area)
    check_id("school_id", school_id)
    return _SLOT_LABEL + _prefixed(kind) + _prefixed(school_id) + _prefixed(area)


def seal(keyring: KeyRing, slot: Slot, plaintext: bytes) -> bytes:
    """Encrypt `plaintext` for `slot` under the school's current data key."""
    version, aead = keyring.encryption_aead(slot.school_id)
    header = _HEADER.pack(FORMAT_V1, version)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + aead.encrypt(nonce, plaintext, header + slot.associated_data)


class SlotSealer:
    """Seals many slots of one kind, school and area: what `seal` does for each, with what
    they share (the data key and its version, the header, the slot's leading fields) looked
    up once.  An upload seals every record it changes, and building a `Slot` and finding the
    key for each record cost more than the encryption itself (profiled).

    Nonces are drawn from the OS a block at a time, as random as one call per seal.  A
    sealer lives for one batch and is never shared: a copy that outlived a `fork` would
    hand the child the parent's unused nonces.  The key version is the one current when
    the sealer was made, so one batch is sealed under one version even if a rotation lands
    meanwhile, as a batch sealed a moment earlier would be.
    """

    __slots__ = ("_aad_prefix", "_aead", "_header", "_nonces", "_used")

    _BLOCK: ClassVar[int] = NONCE_BYTES * 256

    def __init__(
        self, keyring: KeyRing, school_id: str, area: str, kind: SlotKind = SlotKind.RECORD
    ) -> None:
        version, self._aead = keyring.encryption_aead(school_id)
        self._header = _HEADER.pack(FORMAT_V1, version)
        self._aad_prefix = self._header + _slot_prefix(SlotKind(kind), school_id, area)
        self._nonces = b""
        self._used = 0

    def seal(self, record_id: str, record_version: int, plaintext: bytes) -> bytes:
        """`seal(keyring, Slot(school, area, record_id, record_version, kind), plaintext)`."""
        _check_record(record_id, record_version)
        if self._used == len(self._nonces):
            self._nonces, self._used = os.urandom(self._BLOCK), 0
        nonce = self._nonces[self._used : self._used + NONCE_BYTES]
        self._used += NONCE_BYTES
        aad = self._aad_prefix + _prefixed(record_id) + _U64.pack(record_version)
        return self._header + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def seal_json(self, record_id: str, record_version: int, value: Any) -> bytes:
        return self.seal(record_id, record_version, orjson.dumps(value))


def open_sealed(keyring: KeyRing, slot: Slot, blob: bytes) -> bytes:
    """Decrypt a blob sealed for `slot`, or raise: nothing unauthenticated is ever returned."""
    version = key_version_of(blob)
    try:
        aead = keyring.decryption_aead(slot.school_id, version)
    except UnknownKeyVersionError as exc:
        # The school never had this key: the blob is another school's or its header was edited.
        raise IntegrityError("blob names a data-key version this school lacks") from exc
    view = memoryview(blob)  # slices of a view do not copy large payloads
    aad = view[: _HEADER.size].tobytes() + slot.associated_data
    try:
        return aead.decrypt(view[_HEADER.size : _BODY_START], view[_BODY_START:], aad)
    except InvalidTag:
        raise IntegrityError("blob failed authentication for this slot") from None


def key_version_of(blob: bytes) -> int:
    """The data-key version named in a blob's header (unauthenticated until opened)."""
    if not blob:
        raise IntegrityError("blob is empty")
    if blob[0] != FORMAT_V1:
        raise UnsupportedFormatError(f"unknown blob format 0x{blob[0]:02x}")
    if len(blob) < MIN_BLOB_BYTES:
        raise IntegrityError("blob is truncated")
    version: int = _HEADER.unpack_from(blob)[1]
    return version


def reseal(keyring: KeyRing, slot: Slot, blob: bytes) -> bytes | None:
    """Re-encrypt a blob under the school's current data key; None if it needs no change.

    For the data-key rotation job: idempotent, and never moves a blob back to an older
    version when this process has not yet seen a rotation made elsewhere.
    """
    current, _ = keyring.encryption_aead(slot.school_id)
    if key_version_of(blob) >= current:
        return None
    return seal(keyring, slot, open_sealed(keyring, slot, blob))


def seal_json(keyring: KeyRing, slot: Slot, value: Any) -> bytes:
    return seal(keyring, slot, orjson.dumps(value))


def open_json(keyring: KeyRing, slot: Slot, blob: bytes) -> Any:
    return orjson.loads(open_sealed(keyring, slot, blob))
