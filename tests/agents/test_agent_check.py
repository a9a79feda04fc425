"""A delta validates what it sends: records whose content is as stored are not checked
again, and everything else is checked exactly as before."""

from __future__ import annotations

from typing import Any

from agents.diff import canonical, compute, record_hash
from agents.extract import check

AREA = "students.basic"
VALID = {"id": "s-1", "forename": "Amara", "date_of_birth": "2013-04-09", "on_roll": True}
# Invalid under the catalogue (a number for a name); stored as if a laxer release sent it.
LAX = {"id": "s-2", "forename": 7}


def outcome(records: list[Any], **kwargs: Any) -> tuple[list[Any], list[bytes], list[str]]:
    checked = check(AREA, records, batch_limit=10_000, **kwargs)
    return checked.good, checked.encoded, checked.invalid + checked.too_large


def test_a_record_as_stored_is_not_validated_again() -> None:
    stored = {"s-2": record_hash(LAX)}
    good, _, problems = outcome([VALID, LAX], unchanged=stored)
    assert good == [VALID, LAX]  # kept as the broker has it: a delta does not send it
    assert problems == []
    good, _, problems = outcome([VALID, LAX])  # a full checks every record
    assert good == [VALID]
    assert problems == ["record 1 (s-2) field 'forename': expected a string, got int"]


def test_a_changed_or_new_record_is_validated_as_before() -> None:
    changed = {"id": "s-2", "forename": 8}
    odd: list[Any] = [
        VALID,
        changed,  # its stored hash is LAX's: changed, so checked, and refused
        {"id": "s-3", "forename": "x" * 20_000},  # new and too large
        {"id": "s 4"},  # a bad id
        ["not", "a", "record"],
        {"id": ["s-5"]},  # an id that is not a string, with a hash stored under no id
        {"id": "s-1", "forename": "Amara"},  # a duplicate id
        {"id": "s-6", "forename": {1, 2}},  # not JSON at all
    ]
    stored = {"s-2": record_hash(LAX), "s-1": record_hash(VALID), "s 4": b"x" * 16}
    assert outcome(odd, unchanged=stored) == outcome(odd)
    assert outcome(odd, unchanged={}) == outcome(odd)


def test_the_encoding_kept_is_the_canonical_one_either_way() -> None:
    shuffled = {"on_roll": True, "id": "s-1", "date_of_birth": "2013-04-09", "forename": "Amara"}
    stored = {"s-1": record_hash(VALID)}
    assert outcome([shuffled], unchanged=stored)[1] == outcome([shuffled])[1]
    assert outcome([shuffled], unchanged=stored)[1] == [
        b'{"date_of_birth":"2013-04-09","forename":"Amara","id":"s-1","on_roll":true}'
    ]


def test_a_delta_hands_the_hashes_it_took_to_the_diff() -> None:
    """An unchanged record is hashed once, by the check; the diff is the same as before."""
    stored = {"s-1": record_hash(VALID), "s-gone": b"\0" * 16}
    changed = {"id": "s-3", "forename": "Ben"}
    checked = check(AREA, [VALID, changed], batch_limit=10_000, unchanged=stored)
    assert checked.digests == [record_hash(VALID), None]
    handed = compute(
        checked.good, stored, full=False, encoded=checked.encoded, digests=checked.digests
    )
    assert handed == compute(checked.good, stored, full=False)
    assert handed.upserts == [changed]
    assert handed.deleted == ["s-gone"]


def test_an_unchanged_record_is_still_counted_once_and_measured() -> None:
    """The quick way through for a record as stored still refuses a second copy of its id,
    and still leaves it out if it no longer fits a batch (the broker lowered its limit)."""
    stored = {"s-1": record_hash(VALID)}
    good, _, problems = outcome([VALID, dict(VALID)], unchanged=stored)
    assert good == [VALID]
    assert problems == ["record 1 (s-1): duplicate id"]
    size = len(canonical(VALID))
    fitting = check(AREA, [VALID], batch_limit=size + 10, overhead=10, unchanged=stored)
    assert fitting.good == [VALID]
    tight = check(AREA, [VALID], batch_limit=size + 9, overhead=10, unchanged=stored)
    assert tight.good == []
    assert tight.encoded == tight.digests == []
    assert tight.too_large == [
        f"record 0 (s-1): {size} bytes as JSON, too large for a batch (limit {size + 9} bytes)"
    ]
    assert [(q.record_id, q.field) for q in tight.quarantined] == [("s-1", "")]


def test_a_changed_copy_first_makes_the_unchanged_one_a_duplicate() -> None:
    changed = {**VALID, "forename": "Ama"}
    stored = {"s-1": record_hash(VALID)}
    checked = check(AREA, [changed, VALID], batch_limit=10_000, unchanged=stored)
    assert checked.good == [changed]
    assert checked.digests == [None]  # changed: the diff hashes it
    assert checked.invalid == ["record 1 (s-1): duplicate id"]
    assert outcome([changed, VALID], unchanged=stored) == outcome([changed, VALID])
