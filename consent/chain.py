"""The pure part of the tamper-evident access log: canonical bytes, hash links, verification.

Each school's log is a hash chain: entry `seq` (1, 2, 3, ...) is stored with
`link_hash(hash of entry seq-1, seq, entry)`, entry 1 chaining from `genesis(school_id)`.
The seq is inside the hashed bytes, so an entry moved to another position no longer fits.

What this detects: an entry edited, a stored hash edited, an entry removed (a gap in seq),
entries out of order or duplicated, and an appended entry whose hash does not chain.  What
it cannot detect on its own: someone with write access rewriting the chain from some point
on with freshly computed hashes, or dropping the newest entries.  Both need a trusted
`head` (seq and hash) kept outside the database, e.g. in the school's last export.

Keyed chains close the first gap: with a `key` every link is HMAC-SHA256 instead of
SHA-256, so recomputing hashes needs the key, which the broker keeps sealed under the KEK
(`school_key` derives one key per school from the deployment's audit key).  Without a key
the functions behave exactly as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Final, Literal, TypeAlias

GENESIS_PREFIX: Final = b"misbroker-access-log:"
SCHOOL_KEY_PREFIX: Final = b"misbroker-access-log-key:"
HASH_SIZE: Final = 32

BreakKind: TypeAlias = Literal[
    "altered",  # the stored hash does not chain: entry, hash or seq edited, or forged
    "gap",  # this seq is missing, and maybe some after it
    "reordered",  # this entry comes after a later one
    "duplicate",  # this seq appears again
    "head_mismatch",  # the entry at the trusted head's seq has another hash
    "truncated",  # the chain stops before the trusted head
]


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int
    kind: BreakKind


def genesis(school_id: str, key: bytes | None = None) -> bytes:
    """The hash that entry 1 of a school's log chains from."""
    return _digest(key, GENESIS_PREFIX + school_id.encode())


def school_key(audit_key: bytes, school_id: str) -> bytes:
    """The chain key of one school, derived from the deployment's audit key."""
    if len(audit_key) < HASH_SIZE:
        raise ValueError(f"an audit key must be at least {HASH_SIZE} bytes")
    return hmac.new(audit_key, SCHOOL_KEY_PREFIX + school_id.encode(), hashlib.sha256).digest()


def _digest(key: bytes | None, data: bytes) -> bytes:
    if key is None:
        return hashlib.sha256(data).digest()
    return hmac.digest(key, data, "sha256")  # one-shot: the same MAC, a third of the cost


def canonical(entry: Mapping[str, Any]) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8, times as fixed-width UTC `Z`.

    Sets become sorted lists.  Anything else that JSON cannot carry exactly (naive times,
    NaN, bytes, non-string keys) is refused rather than silently coerced.
    """
    text = json.dumps(
        _plain(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode()


def entry_hash(prev_hash: bytes, canonical_entry: bytes, key: bytes | None = None) -> bytes:
    """SHA-256 (HMAC-SHA256 with a key) over prev_hash || 8-byte length || canonical_entry."""
    if len(prev_hash) != HASH_SIZE:
        raise ValueError(f"prev_hash must be {HASH_SIZE} bytes")
    size = len(canonical_entry).to_bytes(8, "big")
    return _digest(key, prev_hash + size + canonical_entry)


def link_hash(
    prev_hash: bytes, seq: int, entry: Mapping[str, Any], key: bytes | None = None
) -> bytes:
    """The hash stored with entry `seq`: its position is hashed along with its content."""
    return entry_hash(prev_hash, canonical({"seq": seq, "entry": entry}), key)


def link_hash_canonical(
    prev_hash: bytes, seq: int, canonical_entry: bytes, key: bytes | None = None
) -> bytes:
    """`link_hash` for an entry already encoded by `canonical`: the same digest, cheaper.

    `canonical({"seq": seq, "entry": entry})` is the entry's canonical bytes wrapped as
    below ("entry" sorts before "seq", and an int is written as its decimal digits), so
    an entry encoded once can be linked at whatever seq it is given.
    """
    if type(seq) is not int:
        raise TypeError("seq must be an int")
    body = b'{"entry":' + canonical_entry + b',"seq":' + str(seq).encode() + b"}"
    return entry_hash(prev_hash, body, key)


def utc_text(value: datetime) -> str:
    """A time as `canonical` writes it: UTC, microseconds, `Z` (naive times are refused)."""
    if value.tzinfo is UTC and type(value) is datetime:  # already UTC: skip the conversion
        return value.isoformat(timespec="microseconds")[:-6] + "Z"  # less its "+00:00"
    if value.utcoffset() is None:
        raise ValueError("naive datetime in an access-log entry")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


def verify_chain(
    school_id: str,
    entries: Iterable[tuple[int, Mapping[str, Any], bytes]],
    head: tuple[int, bytes] | None = None,
    key: bytes | None = None,
) -> list[ChainBreak]:
    """Every break in a school's log, sorted by seq; an empty list means intact.

    `entries` are (seq, entry, stored hash) in storage order.  Each link is checked
    against the stored hash of seq-1, wherever that row sits, so one tampered row is
    reported once (twice for an edited hash: it and its successor) rather than breaking
    everything after it.  `head`, a (seq, hash) known from outside, also catches a
    rewritten chain and dropped newest entries.  `key` verifies a keyed chain.
    """
    rows = list(entries)
    stored: dict[int, bytes] = {}
    for seq, _, digest in rows:
        stored.setdefault(seq, digest)
    breaks = _order_breaks(rows, stored)
    first = genesis(school_id, key)
    for seq, entry, digest in rows:
        prev = first if seq == 1 else stored.get(seq - 1)  # None: a gap, reported already
        if seq < 1 or (prev is not None and link_hash(prev, seq, entry, key) != digest):
            breaks.append(ChainBreak(seq, "altered"))
    breaks += _head_breaks(stored, head)
    return sorted(breaks, key=lambda b: b.seq)


def _order_breaks(
    rows: list[tuple[int, Mapping[str, Any], bytes]], stored: Mapping[int, bytes]
) -> list[ChainBreak]:
    """Missing seqs (one break per run), repeated seqs, and rows after a later one."""
    present = sorted(seq for seq in stored if seq >= 1)
    breaks = [ChainBreak(a + 1, "gap") for a, b in pairwise([0, *present]) if b > a + 1]
    seen: set[int] = set()
    latest = 0
    for seq, _, _ in rows:
        if seq in seen:
            breaks.append(ChainBreak(seq, "duplicate"))
        elif seq < latest:
            breaks.append(ChainBreak(seq, "reordered"))
        seen.add(seq)
        latest = max(latest, seq)
    return breaks


def _head_breaks(stored: Mapping[int, bytes], head: tuple[int, bytes] | None) -> list[ChainBreak]:
    if head is None:
        return []
    seq, digest = head
    last = max(stored, default=0)
    if seq > last:
        return [ChainBreak(last + 1, "truncated")]
    found = stored.get(seq)  # None: a gap, reported already
    return [] if found in (None, digest) else [ChainBreak(seq, "head_mismatch")]


def _plain(value: Any) -> Any:
    """Turn an entry into plain JSON values, refusing anything ambiguous."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("access-log entry keys must be strings")
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    raise TypeError(f"cannot put {type(value).__name__} in an access-log entry")
