"""Bounds on JSON before and after parsing: how many values, how deep, how long an array.

Parsing turns each value into a Python object of ~30-70 bytes, so a body of tiny values
(`[1,1,1,...]`, `[{},{},...]`) costs ten to twenty times its size once parsed.  The count
below is taken on the bytes, before any object exists.
"""

from __future__ import annotations

import re
from typing import Any, Final

# A JSON string, escapes included; linear (no nested quantifier can backtrack).
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def value_bound(body: bytes | bytearray) -> int:
    """An upper bound on the values and members in `body` (commas in strings count too)."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


def value_count(body: bytes | bytearray) -> int:
    """`value_bound` less the commas and brackets inside strings (no copy of the body)."""
    inside = 0
    for found in _STRING.finditer(body):
        text = found.group()
        inside += text.count(b",") + text.count(b"[") + text.count(b"{")
    return value_bound(body) - inside


def too_many_values(body: bytes | bytearray, limit: int) -> bool:
    """True if `body` holds more than `limit` values; the exact count only when it matters.

    A value takes at least one byte and a separator from the next, so JSON of n bytes holds
    at most (n + 1) / 2 values (`[1,1]`), and no parser gets further than that into a
    longer text that is not JSON: a body that short is not counted.  Counting an upload's
    bytes three times cost 1 us a record (profiled), and most bodies are far below the
    limit.
    """
    if (len(body) + 1) // 2 <= limit:
        return False
    return value_bound(body) > limit and value_count(body) > limit


def shape_problem(doc: Any, *, max_depth: int, max_items: int) -> str | None:
    """Why a parsed document is too deep or holds too long an array, or None if it is fine."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            if len(value) > max_items:
                return f"an array holds {len(value)} items; at most {max_items}"
            children = value
        else:
            continue
        if depth > max_depth:
            return f"JSON nested deeper than {max_depth} levels"
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return None
