"""A school's record keys and content digests are HMAC-SHA256, whatever computes them.

Record keys are stored: a digest that changed between releases would orphan every cached
record.  So the pre-keyed computation is held to the standard library's `hmac` exactly.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cache.naming import SchoolMacs

# Around SHA-256's 64-byte block: shorter keys are padded, longer ones hashed first.
KEY_LENGTHS = (0, 1, 32, 63, 64, 65, 200)
RECORD_IDS = ("", "stu-00001", "Zoë-ß-学生", "x" * 300)
CONTENTS = (b"", b'{"id":"stu-00001"}', bytes(range(256)) * 40)


@pytest.mark.parametrize("key_length", KEY_LENGTHS)
def test_record_keys_and_content_hashes_are_hmac_sha256(key_length: int) -> None:
    record_key_mac = bytes((7 * i + 1) % 256 for i in range(key_length))
    content_mac = bytes((11 * i + 3) % 256 for i in range(key_length))
    macs = SchoolMacs(record_key_mac, content_mac)
    for record_id in RECORD_IDS:
        expected = hmac.new(record_key_mac, record_id.encode(), hashlib.sha256).hexdigest()
        assert macs.record_key(record_id) == expected[:32]
    for content in CONTENTS:
        expected_hash = hmac.new(content_mac, content, hashlib.sha256).digest()
        assert macs.content_hash(content) == expected_hash[:16]


def test_a_digest_does_not_depend_on_the_ones_before_it() -> None:
    macs = SchoolMacs(b"k" * 32, b"c" * 32)
    first = macs.record_key("stu-00001")
    macs.record_key("stu-00002")
    macs.content_hash(b"x" * 10_000)
    assert macs.record_key("stu-00001") == first
    assert macs.record_key("stu-00001") != macs.record_key("stu-00002")
