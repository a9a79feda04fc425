"""The diff: hashes are canonical, deltas carry exactly what changed, fulls carry all."""

from agents.diff import compute, record_hash


def test_hash_ignores_key_order_at_every_level() -> None:
    one = {"id": "a", "x": 1, "phones": [{"type": "home", "number": "1"}]}
    two = {"phones": [{"number": "1", "type": "home"}], "x": 1, "id": "a"}
    assert record_hash(one) == record_hash(two)
    assert record_hash(one) != record_hash({**one, "x": 2})


def test_first_delta_against_nothing_upserts_everything() -> None:
    records = [{"id": "a", "v": 1}, {"id": "b", "v": 2}]
    diff = compute(records, {}, full=False)
    assert [r["id"] for r in diff.upserts] == ["a", "b"]
    assert diff.deleted == []
    assert set(diff.hashes) == {"a", "b"}


def test_delta_has_changes_additions_and_deletions_only() -> None:
    before = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "c", "v": 3}]
    stored = {str(r["id"]): record_hash(r) for r in before}
    after = [{"id": "a", "v": 1}, {"id": "b", "v": 20}, {"id": "d", "v": 4}]
    diff = compute(after, stored, full=False)
    assert [r["id"] for r in diff.upserts] == ["b", "d"]
    assert diff.deleted == ["c"]
    assert set(diff.hashes) == {"b", "d"}  # only what changed is rewritten
    assert not diff.full


def test_unchanged_delta_is_empty() -> None:
    records = [{"id": "a", "v": 1}]
    diff = compute(records, {"a": record_hash(records[0])}, full=False)
    assert diff.empty


def test_full_carries_every_record_and_no_deletions() -> None:
    stored = {"gone": b"x" * 16, "a": record_hash({"id": "a", "v": 1})}
    diff = compute([{"id": "a", "v": 1}, {"id": "b", "v": 2}], stored, full=True)
    assert diff.full
    assert [r["id"] for r in diff.upserts] == ["a", "b"]
    assert diff.deleted == []
    assert set(diff.hashes) == {"a", "b"}  # a full replaces the stored hashes
