"""The sealed-blob format: round trips, slot binding, tampering, key versions, shredding."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cache.crypto import (
    FORMAT_V1,
    MIN_BLOB_BYTES,
    IntegrityError,
    Slot,
    SlotKind,
    SlotSealer,
    UnsupportedFormatError,
    key_version_of,
    open_json,
    open_sealed,
    reseal,
    seal,
    seal_json,
)
from cache.keys import InMemoryDataKeyStore, KeyRing, KeyShreddedError, LocalKeyProvider
from consent.areas import CATALOGUE, UnknownAreaError

KEK = LocalKeyProvider({"k1": secrets.token_bytes(32)}, "k1")


def new_ring() -> KeyRing:
    return KeyRing(KEK, InMemoryDataKeyStore())


printable = st.characters(codec="utf-8", categories=["L", "N", "P", "S"], include_characters=" ")
ids = st.text(printable, min_size=1, max_size=40)
slots = st.builds(
    Slot,
    school_id=ids,
    area=st.sampled_from(sorted(CATALOGUE)),
    record_id=ids,
    record_version=st.integers(0, 2**64 - 1),
    kind=st.sampled_from(SlotKind),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def slot(**changes: Any) -> Slot:
    base = Slot("sch_0001", "students.basic", "stu-42", 7, SlotKind.RECORD)
    return dataclasses.replace(base, **changes)


@given(slot=slots, plaintext=st.binary(max_size=2048))
def test_round_trip(slot: Slot, plaintext: bytes) -> None:
    ring = new_ring()
    blob = seal(ring, slot, plaintext)
    assert len(blob) == len(plaintext) + MIN_BLOB_BYTES
    assert blob[0] == FORMAT_V1
    assert key_version_of(blob) == 1
    assert open_sealed(ring, slot, blob) == plaintext


@given(slot=slots, value=json_values)
def test_json_round_trip(slot: Slot, value: object) -> None:
    ring = new_ring()
    assert open_json(ring, slot, seal_json(ring, slot, value)) == value


def test_sealing_is_randomised() -> None:
    ring = new_ring()
    assert seal(ring, slot(), b"same") != seal(ring, slot(), b"same")


def test_blob_opens_with_another_keyring_on_the_same_store() -> None:
    store = InMemoryDataKeyStore()
    blob = seal(KeyRing(KEK, store), slot(), b"persisted")
    assert open_sealed(KeyRing(KEK, store), slot(), blob) == b"persisted"


# --- slot binding -----------------------------------------------------------------------


@given(first=slots, second=slots)
def test_associated_data_is_injective(first: Slot, second: Slot) -> None:
    assert (first.associated_data == second.associated_data) == (first == second)


def test_associated_data_length_prefixes_fields() -> None:
    assert slot(school_id="ab", record_id="c").associated_data != (
        slot(school_id="a", record_id="bc").associated_data
    )


field_changes = st.one_of(
    st.builds(lambda v: {"school_id": v}, ids),
    st.builds(lambda v: {"area": v}, st.sampled_from(sorted(CATALOGUE))),
    st.builds(lambda v: {"record_id": v}, ids),
    st.builds(lambda v: {"record_version": v}, st.integers(0, 2**64 - 1)),
    st.builds(lambda v: {"kind": v}, st.sampled_from(SlotKind)),
)


@given(original=slots, change=field_changes, other_school_has_keys=st.booleans())
def test_any_other_slot_fails(
    original: Slot, change: dict[str, Any], other_school_has_keys: bool
) -> None:
    moved = dataclasses.replace(original, **change)
    assume(moved != original)
    ring = new_ring()
    if other_school_has_keys:
        seal(ring, moved, b"the other slot's own data")
    blob = seal(ring, original, b"secret")
    with pytest.raises(IntegrityError):
        open_sealed(ring, moved, blob)


def test_school_a_blob_does_not_open_as_school_b() -> None:
    ring = new_ring()
    school_a, school_b = slot(school_id="sch_A"), slot(school_id="sch_B")
    blob_a = seal(ring, school_a, b"A's pupil")
    with pytest.raises(IntegrityError):
        open_sealed(ring, school_b, blob_a)  # B has no keys yet
    seal(ring, school_b, b"B's pupil")
    with pytest.raises(IntegrityError):
        open_sealed(ring, school_b, blob_a)  # B's key v1 is a different key


def test_record_blob_does_not_open_as_page_or_blob() -> None:
    ring = new_ring()
    blob = seal(ring, slot(kind=SlotKind.RECORD), b"x")
    for kind in (SlotKind.PAGE, SlotKind.BLOB):
        with pytest.raises(IntegrityError):
            open_sealed(ring, slot(kind=kind), blob)


# --- tampering --------------------------------------------------------------------------


def test_every_single_bit_flip_fails() -> None:
    ring = new_ring()
    blob = seal(ring, slot(), bytes(range(64)))
    for bit in range(len(blob) * 8):
        tampered = bytearray(blob)
        tampered[bit // 8] ^= 1 << (bit % 8)
        expected = UnsupportedFormatError if bit < 8 else IntegrityError
        with pytest.raises(expected):
            open_sealed(ring, slot(), bytes(tampered))


def test_bit_flips_in_the_version_fail_even_when_that_version_exists() -> None:
    ring = new_ring()
    for _ in range(3):
        ring.rotate_data_key("sch_0001")  # versions 1-3 exist; writes use v3
    blob = seal(ring, slot(), b"x")
    assert key_version_of(blob) == 3
    for version in (1, 2):
        tampered = blob[:1] + version.to_bytes(4, "big") + blob[5:]
        with pytest.raises(IntegrityError):
            open_sealed(ring, slot(), tampered)


@given(plaintext=st.binary(max_size=256), data=st.data())
def test_truncated_or_extended_blobs_fail(plaintext: bytes, data: st.DataObject) -> None:
    ring = new_ring()
    blob = seal(ring, slot(), plaintext)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(IntegrityError):
        open_sealed(ring, slot(), blob[:cut])
    with pytest.raises(IntegrityError):
        open_sealed(ring, slot(), blob + data.draw(st.binary(min_size=1, max_size=16)))


@pytest.mark.parametrize("format_byte", [0x00, 0x02, 0x7F, 0xFF])
def test_unknown_format_byte(format_byte: int) -> None:
    ring = new_ring()
    blob = seal(ring, slot(), b"x")
    with pytest.raises(UnsupportedFormatError, match=f"0x{format_byte:02x}"):
        open_sealed(ring, slot(), bytes([format_byte]) + blob[1:])
    with pytest.raises(UnsupportedFormatError):
        open_sealed(ring, slot(), bytes([format_byte]))


def test_empty_blob() -> None:
    with pytest.raises(IntegrityError):
        open_sealed(new_ring(), slot(), b"")


def test_empty_plaintext_is_still_authenticated() -> None:
    ring = new_ring()
    blob = seal(ring, slot(), b"")
    assert open_sealed(ring, slot(), blob) == b""
    with pytest.raises(IntegrityError):
        open_sealed(ring, slot(record_version=8), blob)


# --- key versions, rotation, shredding --------------------------------------------------


def test_key_version_in_the_blob_selects_the_key() -> None:
    ring = new_ring()
    old = seal(ring, slot(), b"old")
    assert ring.rotate_data_key("sch_0001") == 2
    new = seal(ring, slot(), b"new")
    assert (key_version_of(old), key_version_of(new)) == (1, 2)
    assert open_sealed(ring, slot(), old) == b"old"
    assert open_sealed(ring, slot(), new) == b"new"


def test_reseal_moves_old_blobs_to_the_current_key_once() -> None:
    ring = new_ring()
    old = seal(ring, slot(), b"payload")
    assert reseal(ring, slot(), old) is None
    ring.rotate_data_key("sch_0001")
    fresh = reseal(ring, slot(), old)
    assert fresh is not None
    assert key_version_of(fresh) == 2
    assert open_sealed(ring, slot(), fresh) == b"payload"
    assert reseal(ring, slot(), fresh) is None


def test_reseal_refuses_a_tampered_blob() -> None:
    ring = new_ring()
    old = seal(ring, slot(), b"payload")
    ring.rotate_data_key("sch_0001")
    with pytest.raises(IntegrityError):
        reseal(ring, slot(), old[:-1] + bytes([old[-1] ^ 1]))


def test_kek_rotation_keeps_data_readable_without_the_old_kek() -> None:
    store = InMemoryDataKeyStore()
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    blob = seal(KeyRing(LocalKeyProvider({"k1": old}, "k1"), store), slot(), b"pupil")
    rotating = KeyRing(LocalKeyProvider({"k1": old, "k2": new}, "k2"), store)
    assert rotating.rewrap_all("k2") == 1
    after = KeyRing(LocalKeyProvider({"k2": new}, "k2"), store)
    assert open_sealed(after, slot(), blob) == b"pupil"


def test_shred_makes_cached_keys_unusable_at_once() -> None:
    ring = new_ring()
    blob = seal(ring, slot(), b"pupil")
    other = seal(ring, slot(school_id="sch_0002"), b"other school")
    assert open_sealed(ring, slot(), blob) == b"pupil"  # the key is cached now
    ring.shred("sch_0001")
    with pytest.raises(KeyShreddedError):
        open_sealed(ring, slot(), blob)
    with pytest.raises(KeyShreddedError):
        seal(ring, slot(), b"new data for a shredded school")
    assert open_sealed(ring, slot(school_id="sch_0002"), other) == b"other school"


# --- many slots of one area --------------------------------------------------------------


@given(slot=slots, plaintext=st.binary(max_size=512))
def test_a_slot_sealer_seals_what_seal_would_for_the_same_slot(
    slot: Slot, plaintext: bytes
) -> None:
    ring = new_ring()
    sealer = SlotSealer(ring, slot.school_id, slot.area, slot.kind)
    blob = sealer.seal(slot.record_id, slot.record_version, plaintext)
    assert len(blob) == len(plaintext) + MIN_BLOB_BYTES
    assert open_sealed(ring, slot, blob) == plaintext
    other = dataclasses.replace(slot, record_version=(slot.record_version + 1) % 2**64)
    with pytest.raises(IntegrityError):
        open_sealed(ring, other, blob)


def test_a_slot_sealer_never_repeats_a_nonce_across_its_blocks() -> None:
    sealer = SlotSealer(new_ring(), "sch_0001", "students.basic")
    nonces = {sealer.seal(f"stu-{n}", n, b"x")[5:17] for n in range(1000)}  # four blocks
    assert len(nonces) == 1000


def test_a_slot_sealer_keeps_the_version_current_when_it_was_made() -> None:
    ring = new_ring()
    sealer = SlotSealer(ring, "sch_0001", "students.basic")
    ring.rotate_data_key("sch_0001")
    blob = sealer.seal("stu-42", 7, b"sealed under v1")
    assert key_version_of(blob) == 1
    assert open_sealed(ring, slot(), blob) == b"sealed under v1"
    assert (
        key_version_of(SlotSealer(ring, "sch_0001", "students.basic").seal("stu-42", 7, b"")) == 2
    )


def test_a_slot_sealer_checks_what_a_slot_checks() -> None:
    sealer = SlotSealer(new_ring(), "sch_0001", "students.basic")
    for bad in ("", "a\x00b"):
        with pytest.raises(ValueError, match="record_id"):
            sealer.seal(bad, 1, b"")
    for version in (-1, 2**64):
        with pytest.raises(ValueError, match="record_version"):
            sealer.seal("stu-42", version, b"")
    with pytest.raises(UnknownAreaError):
        SlotSealer(new_ring(), "sch_0001", "students.everything")
    with pytest.raises(ValueError, match="school_id"):
        SlotSealer(new_ring(), "", "students.basic")


# --- slot validation --------------------------------------------------------------------


def test_slot_validation() -> None:
    with pytest.raises(UnknownAreaError):
        slot(area="students.everything")
    for bad in ({"school_id": ""}, {"record_id": ""}, {"record_id": "a\x00b"}):
        with pytest.raises(ValueError, match="_id"):
            slot(**bad)
    for version in (-1, 2**64):
        with pytest.raises(ValueError, match="record_version"):
            slot(record_version=version)
    with pytest.raises(ValueError, match="SlotKind"):
        slot(kind="thumbnail")
    assert slot(kind="page").kind is SlotKind.PAGE
