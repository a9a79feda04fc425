"""Keyed access-log chains: HMAC links that a database writer without the key cannot forge."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from consent.chain import canonical, entry_hash, genesis, link_hash, school_key, verify_chain

KEY = bytes(range(32))
ENTRY = {"at": datetime(2026, 11, 23, 9, tzinfo=UTC), "records": 3}


def chain(key: bytes | None, n: int = 4) -> list[tuple[int, dict[str, object], bytes]]:
    rows = []
    prev = genesis("sch_1", key)
    for seq in range(1, n + 1):
        entry = {**ENTRY, "records": seq}
        prev = link_hash(prev, seq, entry, key)
        rows.append((seq, entry, prev))
    return rows


def test_a_keyed_link_is_hmac_sha256_of_the_same_bytes() -> None:
    prev = genesis("sch_1", KEY)
    body = canonical({"seq": 1, "entry": ENTRY})
    expected = hmac.new(KEY, prev + len(body).to_bytes(8, "big") + body, hashlib.sha256).digest()
    assert link_hash(prev, 1, ENTRY, KEY) == expected == entry_hash(prev, body, KEY)
    assert link_hash(prev, 1, ENTRY) != expected  # unkeyed stays plain SHA-256


def test_a_keyed_chain_verifies_only_with_its_key() -> None:
    rows = chain(KEY)
    assert verify_chain("sch_1", rows, (4, rows[-1][2]), key=KEY) == []
    assert [b.kind for b in verify_chain("sch_1", rows, key=bytes(32))] == ["altered"] * 4
    assert [b.seq for b in verify_chain("sch_1", rows)] == [1, 2, 3, 4]


def test_an_unkeyed_forgery_does_not_pass_a_keyed_check() -> None:
    forged = chain(None)
    assert verify_chain("sch_1", forged) == []
    assert len(verify_chain("sch_1", forged, key=KEY)) == 4


def test_each_school_gets_its_own_key() -> None:
    assert school_key(KEY, "sch_1") != school_key(KEY, "sch_2")
    assert school_key(KEY, "sch_1") == school_key(KEY, "sch_1")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        school_key(b"short", "sch_1")
