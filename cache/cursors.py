"""Pagination cursors: opaque, tamper-evident, bound to one school and area.

A cursor is base64url of a nonce and the AES-GCM encryption of a small JSON position, with
the school and area as associated data.  Encrypting (not only signing) keeps record keys
and sequence numbers out of partners' logs; authentication makes a tampered cursor, or one
taken from another area, fail as `InvalidCursorError` instead of reading somewhere else.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import orjson
from cryptography.exceptions import InvalidTag

from cache.errors import InvalidCursorError
from cache.naming import Namer, from_instant_key, instant_key

_NONCE: Final = 12
_MAX_CURSOR: Final = 512


@dataclass(frozen=True, slots=True)
class Position:
    """Where the next page starts.  `snapshot` is the area's last_seq at the first page."""

    mode: Literal["full", "delta"]
    snapshot: int
    after_key: str | None = None  # full: last record_key returned
    after_seq: int = 0  # delta: last seq returned
    since: datetime | None = None  # delta: the updated_since of the first page

    def payload(self) -> dict[str, Any]:
        if self.mode == "full":
            return {"m": "full", "s": self.snapshot, "k": self.after_key}
        return {"m": "delta", "s": self.snapshot, "q": self.after_seq, "u": instant_key(self.since)}


def _aad(school_id: str, area: str) -> bytes:
    return orjson.dumps(["cursor", school_id, area])


def encode_cursor(namer: Namer, school_id: str, area: str, position: Position) -> str:
    nonce = os.urandom(_NONCE)
    body = namer.cursor_aead.encrypt(nonce, orjson.dumps(position.payload()), _aad(school_id, area))
    return base64.urlsafe_b64encode(nonce + body).rstrip(b"=").decode()


def decode_cursor(namer: Namer, school_id: str, area: str, cursor: str) -> Position:
    if not cursor or len(cursor) > _MAX_CURSOR:
        raise InvalidCursorError("cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        plain = namer.cursor_aead.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(school_id, area))
        return _position(orjson.loads(plain))
    except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError):
        raise InvalidCursorError("cursor is not valid for this area") from None


def _position(payload: dict[str, Any]) -> Position:
    snapshot = int(payload["s"])
    if payload["m"] == "full":
        return Position("full", snapshot, after_key=str(payload["k"]))
    if payload["m"] == "delta":
        since = from_instant_key(int(payload["u"]))
        return Position("delta", snapshot, after_seq=int(payload["q"]), since=since)
    raise ValueError("unknown cursor mode")
