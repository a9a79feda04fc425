"""Envelope sealing of the few secrets the broker must use in clear later.

TOTP seeds and webhook signing secrets cannot be hashed, so each is encrypted under its own
random data key, and that key is wrapped by the KEK.  Rotating the KEK only needs the small
wrapped key rewritten; the context (e.g. b"totp:adm_...") binds a sealed value to its row.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cache.keys import KeyProvider, WrappedKey

_FORMAT = 1
_NONCE = 12


class SealedSecretError(ValueError):
    pass


class KekSealer:
    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = self.provider.wrap(data_key, context=context)
        nonce = os.urandom(_NONCE)
        body = AESGCM(data_key).encrypt(nonce, plaintext, context)
        kek_id = wrapped.kek_id.encode()
        header = struct.pack(">BBH", _FORMAT, len(kek_id), len(wrapped.ciphertext))
        return header + kek_id + wrapped.ciphertext + nonce + body

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        try:
            fmt, kid_len, wrapped_len = struct.unpack_from(">BBH", sealed)
        except struct.error:
            raise SealedSecretError("sealed secret is truncated") from None
        if fmt != _FORMAT:
            raise SealedSecretError(f"unknown sealed-secret format {fmt}")
        offset = 4
        kek_id = sealed[offset : offset + kid_len].decode()
        offset += kid_len
        wrapped = WrappedKey(kek_id, sealed[offset : offset + wrapped_len])
        offset += wrapped_len
        nonce, body = sealed[offset : offset + _NONCE], sealed[offset + _NONCE :]
        data_key = self.provider.unwrap(wrapped, context=context)
        try:
            return AESGCM(data_key).decrypt(nonce, body, context)
        except InvalidTag:
            raise SealedSecretError("sealed secret failed authentication") from None
