"""The access-log hash chain: canonical bytes, links, and every kind of tampering."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from consent.chain import (
    ChainBreak,
    canonical,
    entry_hash,
    genesis,
    link_hash,
    verify_chain,
)

SCHOOL = "sch_1"
Row = tuple[int, Mapping[str, Any], bytes]


def build(entries: Sequence[Mapping[str, Any]], school: str = SCHOOL) -> list[Row]:
    rows: list[Row] = []
    prev = genesis(school)
    for seq, entry in enumerate(entries, start=1):
        prev = link_hash(prev, seq, entry)
        rows.append((seq, entry, prev))
    return rows


def entry(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "actor": "partner:ptn_1",
        "areas": ["students.basic"],
        "at": datetime(2025, 9, 1, 8, tzinfo=UTC) + timedelta(minutes=n),
        "decision": "allowed",
        "records": n,
        **extra,
    }


ROWS = build([entry(n) for n in range(6)])


def first(breaks: list[ChainBreak]) -> tuple[int, str]:
    return breaks[0].seq, breaks[0].kind


# ---------------------------------------------------------------------------------------
# Canonical bytes and hashes


def test_canonical_is_sorted_compact_utf8_with_fixed_width_utc_times() -> None:
    at = datetime(2025, 9, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    data = {"b": [1, 2.5, None, True], "a": {"z": "Zoë", "y": at}, "s": frozenset({"y", "x"})}
    assert (
        canonical(data)
        == (
            '{"a":{"y":"2025-09-01T08:30:00.000000Z","z":"Zoë"},"b":[1,2.5,null,true],"s":["x","y"]}'
        ).encode()
    )


def test_canonical_does_not_depend_on_key_order() -> None:
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})


@pytest.mark.parametrize(
    "bad",
    [
        {"at": datetime(2025, 9, 1)},
        {"n": float("nan")},
        {"blob": b"\x00"},
        {"nested": {1: "x"}},
    ],
    ids=["naive time", "nan", "bytes", "int key"],
)
def test_canonical_refuses_what_json_cannot_carry_exactly(bad: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical(bad)


def test_entry_hash_is_sha256_of_prev_length_and_bytes() -> None:
    prev = genesis(SCHOOL)
    body = b'{"a":1}'
    assert entry_hash(prev, body) == hashlib.sha256(prev + (7).to_bytes(8, "big") + body).digest()
    with pytest.raises(ValueError, match="32 bytes"):
        entry_hash(b"short", body)


def test_genesis_is_per_school() -> None:
    assert genesis("sch_1") == hashlib.sha256(b"misbroker-access-log:sch_1").digest()
    assert genesis("sch_1") != genesis("sch_2")


# ---------------------------------------------------------------------------------------
# Verification by example


def test_an_intact_chain_has_no_breaks() -> None:
    assert verify_chain(SCHOOL, ROWS) == []
    assert verify_chain(SCHOOL, ROWS, head=(6, ROWS[-1][2])) == []
    assert verify_chain(SCHOOL, []) == []


def test_an_altered_entry_is_named() -> None:
    rows = list(ROWS)
    seq, content, digest = rows[2]
    rows[2] = (seq, {**content, "records": 0}, digest)
    assert verify_chain(SCHOOL, rows) == [ChainBreak(3, "altered")]


def test_an_altered_hash_breaks_its_entry_and_the_next() -> None:
    rows = list(ROWS)
    seq, content, _ = rows[2]
    rows[2] = (seq, content, bytes(32))
    assert verify_chain(SCHOOL, rows) == [ChainBreak(3, "altered"), ChainBreak(4, "altered")]


def test_a_removed_entry_is_a_gap() -> None:
    assert verify_chain(SCHOOL, ROWS[:2] + ROWS[3:]) == [ChainBreak(3, "gap")]
    assert verify_chain(SCHOOL, ROWS[1:]) == [ChainBreak(1, "gap")]


def test_removing_the_newest_entries_needs_a_trusted_head() -> None:
    head = (6, ROWS[-1][2])
    assert verify_chain(SCHOOL, ROWS[:4]) == []  # undetectable from the chain alone
    assert verify_chain(SCHOOL, ROWS[:4], head=head) == [ChainBreak(5, "truncated")]
    assert verify_chain(SCHOOL, [], head=head) == [ChainBreak(1, "truncated")]


def test_reordered_entries_are_named() -> None:
    rows = [ROWS[0], ROWS[2], ROWS[1], *ROWS[3:]]
    assert verify_chain(SCHOOL, rows) == [ChainBreak(2, "reordered")]


def test_entries_moved_to_other_seqs_do_not_chain() -> None:
    rows = list(ROWS)
    (s2, e2, h2), (s4, e4, h4) = rows[1], rows[3]
    rows[1], rows[3] = (s2, e4, h4), (s4, e2, h2)
    assert first(verify_chain(SCHOOL, rows)) == (2, "altered")


def test_an_appended_forged_entry_is_named() -> None:
    forged = entry(99, actor="partner:ptn_evil")
    wrong_prev = link_hash(genesis(SCHOOL), 7, forged)
    assert verify_chain(SCHOOL, [*ROWS, (7, forged, wrong_prev)]) == [ChainBreak(7, "altered")]
    assert verify_chain(SCHOOL, [*ROWS, (10**12, forged, bytes(32))]) == [ChainBreak(7, "gap")]


def test_a_duplicated_seq_is_named() -> None:
    assert verify_chain(SCHOOL, [*ROWS[:3], ROWS[2], *ROWS[3:]]) == [ChainBreak(3, "duplicate")]


def test_a_rewritten_chain_is_caught_by_the_head() -> None:
    rewritten = build([entry(n) for n in range(5)] + [entry(5, decision="refused")])
    assert verify_chain(SCHOOL, rewritten) == []
    assert verify_chain(SCHOOL, rewritten, head=(6, ROWS[-1][2])) == [
        ChainBreak(6, "head_mismatch")
    ]


def test_a_chain_does_not_verify_for_another_school() -> None:
    assert verify_chain("sch_2", ROWS) == [ChainBreak(1, "altered")]


def test_seq_must_start_at_one() -> None:
    assert first(verify_chain(SCHOOL, [(0, entry(0), bytes(32)), *ROWS])) == (0, "altered")


# ---------------------------------------------------------------------------------------
# Any single tampering of a random chain is found, and found where it happened

VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.none(),
    st.datetimes(timezones=st.just(UTC)),
)
ENTRIES = st.dictionaries(st.sampled_from(["actor", "areas", "n", "why", "at"]), VALUES)
CHAINS = st.lists(ENTRIES, min_size=2, max_size=15).map(build)


@settings(max_examples=200, deadline=None)
@given(CHAINS, st.data())
def test_a_single_byte_change_is_found_at_its_seq(rows: list[Row], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(rows) - 1))
    seq, content, digest = rows[k]
    raw = bytearray(canonical(content))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(32, 126).filter(lambda b: b != raw[position]))
    try:
        altered = json.loads(raw.decode())
        # A digit turned into an exponent can make a float JSON has no value for ("1e999"
        # is infinity), which `canonical` refuses: not an entry anyone could have stored.
        changed = isinstance(altered, dict) and canonical(altered) != canonical(content)
    except ValueError:
        altered, changed = None, False
    assume(changed)
    assert isinstance(altered, dict)
    tampered = [*rows[:k], (seq, altered, digest), *rows[k + 1 :]]
    assert first(verify_chain(SCHOOL, tampered)) == (seq, "altered")


@settings(max_examples=200, deadline=None)
@given(CHAINS, st.data())
def test_a_single_byte_change_of_a_hash_is_found_at_its_seq(
    rows: list[Row], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(rows) - 1))
    seq, content, digest = rows[k]
    raw = bytearray(digest)
    raw[data.draw(st.integers(0, 31))] ^= data.draw(st.integers(1, 255))
    tampered = [*rows[:k], (seq, content, bytes(raw)), *rows[k + 1 :]]
    assert first(verify_chain(SCHOOL, tampered)) == (seq, "altered")


@settings(max_examples=200, deadline=None)
@given(CHAINS, st.data())
def test_a_removal_is_found_at_its_seq(rows: list[Row], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(rows) - 1))
    head = (rows[-1][0], rows[-1][2])
    found = verify_chain(SCHOOL, rows[:k] + rows[k + 1 :], head=head)
    kind = "truncated" if k == len(rows) - 1 else "gap"
    assert first(found) == (k + 1, kind)


@settings(max_examples=200, deadline=None)
@given(CHAINS, st.data())
def test_a_swap_is_found_at_the_first_swapped_seq(rows: list[Row], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(rows) - 2))
    j = data.draw(st.integers(i + 1, len(rows) - 1))
    swapped = list(rows)
    swapped[i], swapped[j] = rows[j], rows[i]
    assert first(verify_chain(SCHOOL, swapped)) == (i + 1, "reordered")
    moved = list(rows)
    moved[i] = (rows[i][0], rows[j][1], rows[j][2])
    moved[j] = (rows[j][0], rows[i][1], rows[i][2])
    assert first(verify_chain(SCHOOL, moved)) == (i + 1, "altered")


@settings(max_examples=100, deadline=None)
@given(CHAINS, ENTRIES, st.binary(min_size=32, max_size=32))
def test_an_appended_entry_that_does_not_chain_is_found(
    rows: list[Row], forged: dict[str, Any], digest: bytes
) -> None:
    seq = rows[-1][0] + 1
    assume(digest != link_hash(rows[-1][2], seq, forged))
    assert verify_chain(SCHOOL, [*rows, (seq, forged, digest)]) == [ChainBreak(seq, "altered")]
