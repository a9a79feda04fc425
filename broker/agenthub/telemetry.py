"""Bounds on what the broker keeps of an agent's telemetry.

Telemetry is cut down to size, never refused: an agent whose heartbeat was refused would
look silent, and its queued commands would not reach it, so one oversized error message
must not cut the school off.  Whatever is cut says so with a marker, so an operator knows
there was more.  What is stored, and so what `GET /v1/admin/agent` shows, stays small.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

MAX_ERRORS: Final = 20
MAX_STRING_BYTES: Final = 2048
MAX_LIST_ITEMS: Final = 100
MAX_DICT_KEYS: Final = 100
MAX_DEPTH: Final = 6
MAX_TOTAL_BYTES: Final = 64 * 1024

MARKER: Final = "…[truncated by the broker]"
TRUNCATED_KEY: Final = "_truncated"  # the top-level keys dropped to fit MAX_TOTAL_BYTES
# Kept to the last when the whole is too big: what says which agent this is.
CORE: Final = ("agent_version", "os", "mis")


def bound_string(text: str, limit: int = MAX_STRING_BYTES) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    room = limit - len(MARKER.encode())
    return encoded[:room].decode(errors="ignore") + MARKER


def bound_list(items: list[Any], limit: int) -> list[Any]:
    """At most `limit` items: the first `limit - 1` and a marker saying how many went."""
    if len(items) <= limit:
        return items
    dropped = len(items) - (limit - 1)
    return [*items[: limit - 1], f"{MARKER} {dropped} more"]


_INT64 = range(-(2**63), 2**63)


def bound_value(value: Any, depth: int = 0) -> Any:
    """Every string, list and object inside `value` cut to its bound."""
    if isinstance(value, str):
        return bound_string(value)
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return bound_string(str(value), 64)  # JSON stores it; 64-bit encoders would not
    if depth >= MAX_DEPTH and isinstance(value, list | dict):
        return MARKER
    if isinstance(value, list):
        return [bound_value(v, depth + 1) for v in bound_list(value, MAX_LIST_ITEMS)]
    if isinstance(value, dict):
        kept = list(value.items())[:MAX_DICT_KEYS]
        out = {bound_string(str(k), 200): bound_value(v, depth + 1) for k, v in kept}
        if len(value) > MAX_DICT_KEYS:
            out[TRUNCATED_KEY] = f"{MARKER} {len(value) - MAX_DICT_KEYS} more keys"
        return out
    return value


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def bound_telemetry(telemetry: dict[str, Any]) -> dict[str, Any]:
    """Telemetry as stored: at most MAX_ERRORS errors and MAX_TOTAL_BYTES in all.

    Past the field bounds, the largest top-level fields are dropped (their names listed
    under `_truncated`) until the whole fits; `agent_version`, `os` and `mis` go last.
    """
    out: dict[str, Any] = bound_value(telemetry)
    errors = out.get("errors")
    if isinstance(errors, list):
        out["errors"] = bound_list(errors, MAX_ERRORS)
    dropped: list[str] = []
    while _size(out) > MAX_TOTAL_BYTES:
        candidates = [k for k in out if k not in CORE and k != TRUNCATED_KEY] or [
            k for k in out if k != TRUNCATED_KEY
        ]
        largest = max(candidates, key=lambda k: _size(out[k]))
        del out[largest]
        dropped.append(largest)
        names = ", ".join(bound_string(d, 200) for d in dropped)
        out[TRUNCATED_KEY] = bound_string(f"over {MAX_TOTAL_BYTES} bytes, dropped: {names}")
    return out
