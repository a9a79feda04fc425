"""`LogEntry.canonical` (orjson) writes exactly the bytes the original `canonical` wrote.

Stored chains were hashed over `json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)` of the entry; the writer now encodes an entry once
with orjson and links it with `link_hash_canonical`.  These tests hold the two to the same
bytes (and the same refusals) on every code point, on random entries with odd values, and
on a digest made by the code before the change.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.access_log import LogEntry
from consent.chain import canonical, genesis, link_hash, link_hash_canonical, utc_text
from consent.models import LogDecision

KEY = bytes(range(32))


def reference_canonical(entry: Mapping[str, Any]) -> bytes:
    """`consent.chain.canonical` as it was when the first chains were written (frozen)."""
    text = json.dumps(
        _reference_plain(entry),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return text.encode()


def _reference_plain(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError("naive datetime in an access-log entry")
        utc = value.astimezone(UTC).replace(tzinfo=None)
        return utc.isoformat(timespec="microseconds") + "Z"
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("access-log entry keys must be strings")
        return {k: _reference_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_reference_plain(v) for v in value)
    raise TypeError(f"cannot put {type(value).__name__} in an access-log entry")


def outcome(make: Any) -> bytes | type[BaseException]:
    """The bytes, or the kind of error: refusals must match too."""
    try:
        result: bytes = make()
    except (TypeError, ValueError) as exc:
        return type(exc)
    return result


def log_entry(**kw: Any) -> LogEntry:
    fields: dict[str, Any] = {
        "school_id": "sch_a",
        "partner_id": "prt_1",
        "areas": ("students.basic",),
        "record_count": 3,
        "decision": "allowed",
        "reason": "granted",
        "request_id": "req-1",
        "at": datetime(2026, 11, 23, 9, tzinfo=UTC),
        "consent_id": "con_1",
    }
    fields.update(kw)
    return LogEntry(**fields)


def test_every_code_point_is_written_as_before() -> None:
    points = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(points), 2048):
        text = "".join(map(chr, points[start : start + 2048]))
        entry = log_entry(school_id=text, partner_id=text[::-1], areas=(text, "x"))
        assert entry.canonical() == reference_canonical(entry.chained())


def test_a_digest_written_before_the_change_still_links() -> None:
    # Computed by the code before this change; an existing chain must keep verifying.
    entry = log_entry(
        consent_id=None,
        areas=("students.basic", "contacts"),
        record_count=12,
        reason="in_grace",
        request_id='req-é\u2028\x07"\\',
        at=datetime(2026, 11, 23, 9, 0, 1, 500, tzinfo=timezone(timedelta(hours=1))),
    )
    assert entry.canonical() == (
        b'{"areas":["contacts","students.basic"],"at":"2026-11-23T08:00:01.000500Z",'
        b'"consent_id":null,"decision":"allowed","partner_id":"prt_1","reason":"in_grace",'
        b'"record_count":12,"request_id":"req-\xc3\xa9\xe2\x80\xa8\\u0007\\"\\\\",'
        b'"school_id":"sch_a"}'
    )
    first = genesis("sch_a", KEY)
    assert link_hash_canonical(first, 1, entry.canonical(), KEY).hex() == (
        "b537251239856f1b7a64691d5a59df930b426c073fe6ccfb030612db0e4bbaa7"
    )
    assert link_hash_canonical(first, 1, entry.canonical()).hex() == (
        "4466d5bdc60ca4bea35850435b58edde89c2e49f7a547f0d4ba760d4678185d3"
    )


def test_odd_values_take_the_generic_path_and_come_out_the_same() -> None:
    odd = [
        log_entry(record_count=2**64),  # beyond orjson's integers
        log_entry(record_count=True),
        log_entry(record_count=1e16),  # orjson would write 1e16, json 1e+16
        log_entry(decision=LogDecision.DENIED),
        log_entry(areas=(1, 2)),
    ]
    for entry in odd:
        assert entry.canonical() == reference_canonical(entry.chained())
    surrogate = log_entry(reason="\ud800")
    assert outcome(surrogate.canonical) is UnicodeEncodeError
    assert outcome(lambda: reference_canonical(surrogate.chained())) is UnicodeEncodeError
    nan = log_entry(record_count=float("nan"))
    assert outcome(nan.canonical) is ValueError


def test_link_hash_canonical_refuses_a_seq_that_is_not_an_int() -> None:
    with pytest.raises(TypeError):
        link_hash_canonical(genesis("sch_a"), True, b"{}")


# Any code point, control characters included; now and then a lone surrogate, which both
# encoders must refuse.
TEXT = st.text(max_size=40) | st.text(st.characters(categories=["Cs", "Cc", "Ll"]), max_size=4)
SHORT = st.text(max_size=64)
ZONES = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
TIMES = st.builds(
    lambda t, off: t.replace(tzinfo=timezone(off)),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    ZONES.map(lambda d: timedelta(minutes=d // timedelta(minutes=1))),
)
COUNTS = st.one_of(
    st.integers(0, 2**63),
    st.integers(0, 2**80),
    st.booleans(),
    st.floats(min_value=0, allow_infinity=True),
)
ENTRIES = st.builds(
    LogEntry,
    school_id=TEXT,
    partner_id=TEXT,
    areas=st.lists(TEXT, min_size=1, max_size=4).map(tuple),
    record_count=COUNTS,
    decision=st.sampled_from(["allowed", "denied", LogDecision.ALLOWED]),
    reason=SHORT,
    request_id=st.text(max_size=128),
    at=TIMES,
    consent_id=st.none() | TEXT,
)


@settings(max_examples=2000, deadline=None)
@given(ENTRIES, st.integers(1, 2**63 - 1), st.sampled_from([KEY, None]))
def test_random_entries_encode_and_link_exactly_as_before(
    entry: LogEntry, seq: int, key: bytes | None
) -> None:
    new = outcome(entry.canonical)
    assert new == outcome(lambda: reference_canonical(entry.chained()))
    assert new == outcome(lambda: canonical(entry.chained()))
    if isinstance(new, bytes):
        prev = genesis("sch_a", key)
        body = reference_canonical({"seq": seq, "entry": entry.chained()})
        assert link_hash_canonical(prev, seq, new, key) == link_hash(
            prev, seq, entry.chained(), key
        )
        assert body == b'{"entry":' + new + b',"seq":' + str(seq).encode() + b"}"


# The clock's own times (UTC, any microsecond, 0 included), which take orjson's time format.
UTC_TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
    lambda t: t.replace(tzinfo=UTC)
)


@settings(max_examples=3000, deadline=None)
@given(UTC_TIMES, st.sampled_from([0, 1, 999_999, None]))
def test_utc_times_are_written_as_before(at: datetime, microsecond: int | None) -> None:
    if microsecond is not None:
        at = at.replace(microsecond=microsecond)
    entry = log_entry(at=at)
    assert entry.canonical() == reference_canonical(entry.chained())
    assert utc_text(at) == reference_canonical({"at": at})[7:-2].decode()
