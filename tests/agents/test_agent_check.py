"""A delta validates what it sends: records whose content is as stored are not checked
again, and everything else is checked exactly as before."""

from __future__ import annotations

from datetime import date
from typing import Any

from agents.diff import canonical, compute, hash_of, record_hash
from agents.extract import check

AREA = "students.basic"
VALID = {"id": "s-1", "forename": "Amara", "date_of_birth": "2013-04-09", "on_roll": True}
# Invalid under the catalogue (a number for a name); stored as if a laxer release sent it.
LAX = {"id": "s-2", "forename": 7}


def outcome(records: list[Any], **kwargs: Any) -> tuple[list[Any], list[bytes], list[str]]:
    """What the broker will hold (the unchanged as their ids), their JSON, and problems."""
    checked = check(AREA, records, batch_limit=10_000, **kwargs)
    return checked.good + checked.unchanged, checked.encoded, checked.invalid + checked.too_large


def test_a_record_as_stored_is_not_validated_again() -> None:
    stored = {"s-2": record_hash(LAX)}
    good, _, problems = outcome([VALID, LAX], unchanged=stored)
    assert good == [VALID, "s-2"]  # kept as the broker has it: a delta does not send it
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
    delta = check(AREA, odd, batch_limit=10_000, unchanged=stored)
    full = check(AREA, odd, batch_limit=10_000)
    assert delta.unchanged == ["s-1"]  # VALID, as stored: the rest as a full checks them
    assert (delta.good, delta.encoded) == (full.good[1:], full.encoded[1:])
    assert full.good[0] is VALID
    assert delta.invalid == full.invalid
    assert delta.too_large == full.too_large
    assert delta.quarantined == full.quarantined
    assert outcome(odd, unchanged={}) == outcome(odd)


def test_a_changed_record_not_of_its_own_json_type_is_checked_as_a_full_checks_it() -> None:
    """The quick way encodes strictly: a value JSON would write as another type (a date, as
    a string) is checked the long way, as in a full, whatever its hash."""
    dated = {"id": "s-1", "forename": "Amara", "date_of_birth": date(2013, 4, 9)}
    stored = {"s-1": hash_of(canonical(dated))}
    assert outcome([dated], unchanged=stored) == outcome([dated])
    assert outcome([dated], unchanged={"s-1": b"\0" * 16}) == outcome([dated])


def test_key_order_is_not_a_change_and_the_encoding_kept_is_the_canonical_one() -> None:
    shuffled = {"on_roll": True, "id": "s-1", "date_of_birth": "2013-04-09", "forename": "Amara"}
    as_stored = check(AREA, [shuffled], unchanged={"s-1": record_hash(VALID)})
    assert (as_stored.good, as_stored.unchanged) == ([], ["s-1"])
    changed = {"s-1": b"\0" * 16}
    assert outcome([shuffled], unchanged=changed)[1] == outcome([shuffled])[1]
    assert outcome([shuffled], unchanged=changed)[1] == [
        b'{"date_of_birth":"2013-04-09","forename":"Amara","id":"s-1","on_roll":true}'
    ]


def test_a_delta_hands_only_the_ids_of_unchanged_records_to_the_diff() -> None:
    """An unchanged record is hashed once, by the check, and the diff sees only its id;
    the diff is the one every record would give."""
    stored = {"s-1": record_hash(VALID), "s-gone": b"\0" * 16, "s-4": b"\1" * 16}
    changed = {"id": "s-4", "forename": "Cal"}
    new = {"id": "s-3", "forename": "Ben"}
    checked = check(AREA, [VALID, changed, new], batch_limit=10_000, unchanged=stored)
    assert checked.good == [changed, new]
    assert checked.unchanged == ["s-1"]
    assert checked.accepted == 3
    handed = compute(
        checked.good, stored, full=False, encoded=checked.encoded, unchanged=checked.unchanged
    )
    assert handed == compute([VALID, changed, new], stored, full=False)
    assert handed.upserts == [changed, new]
    assert handed.deleted == ["s-gone"]
    assert handed.hashes == {"s-4": record_hash(changed), "s-3": record_hash(new)}


def test_an_unchanged_record_is_still_counted_once_and_measured() -> None:
    """The quick way through for a record as stored still refuses a second copy of its id,
    and still leaves it out if it no longer fits a batch (the broker lowered its limit)."""
    stored = {"s-1": record_hash(VALID)}
    good, _, problems = outcome([VALID, dict(VALID)], unchanged=stored)
    assert good == ["s-1"]
    assert problems == ["record 1 (s-1): duplicate id"]
    size = len(canonical(VALID))
    fitting = check(AREA, [VALID], batch_limit=size + 10, overhead=10, unchanged=stored)
    assert (fitting.good, fitting.unchanged) == ([], ["s-1"])
    tight = check(AREA, [VALID], batch_limit=size + 9, overhead=10, unchanged=stored)
    assert (tight.good, tight.unchanged, tight.encoded) == ([], [], [])
    assert tight.too_large == [
        f"record 0 (s-1): {size} bytes as JSON, too large for a batch (limit {size + 9} bytes)"
    ]
    assert [(q.record_id, q.field) for q in tight.quarantined] == [("s-1", "")]


def test_a_changed_copy_first_makes_the_unchanged_one_a_duplicate() -> None:
    changed = {**VALID, "forename": "Ama"}
    stored = {"s-1": record_hash(VALID)}
    checked = check(AREA, [changed, VALID], batch_limit=10_000, unchanged=stored)
    assert checked.good == [changed]
    assert checked.unchanged == []  # its id was taken by the changed copy
    assert checked.invalid == ["record 1 (s-1): duplicate id"]
    assert outcome([changed, VALID], unchanged=stored) == outcome([changed, VALID])
