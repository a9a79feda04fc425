"""A tiny, valid baseline JPEG written by hand, for synthetic photos.

Pulling in an imaging library for placeholder photos would add a heavy dependency to the
agent; an 8x8 flat grey image needs only one DC coefficient, so it can be encoded here.
"""

from __future__ import annotations

import struct
from typing import Final

_SOI: Final = b"\xff\xd8"
_EOI: Final = b"\xff\xd9"
_APP0_JFIF: Final = b"\xff\xe0" + struct.pack(">H5sBBBHHBB", 16, b"JFIF\0", 1, 1, 0, 1, 1, 0, 0)
_DC_QUANT: Final = 8  # flat 8x8 block: DC = 8 * (grey - 128), so this makes DC = grey - 128
_DQT: Final = b"\xff\xdb" + struct.pack(">HB", 67, 0) + bytes([_DC_QUANT] * 64)
_SOF0: Final = b"\xff\xc0" + struct.pack(">HBHHBBBB", 11, 8, 8, 8, 1, 1, 0x11, 0)
# The standard luminance DC table (ITU T.81 Annex K.3); AC needs only end-of-block.
_DC_COUNTS: Final = (0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0)
_DC_SYMBOLS: Final = tuple(range(12))
_DHT_DC: Final = b"\xff\xc4" + struct.pack(">HB", 31, 0x00) + bytes(_DC_COUNTS + _DC_SYMBOLS)
_DHT_AC: Final = b"\xff\xc4" + struct.pack(">HB", 20, 0x10) + bytes((1,) + (0,) * 15 + (0,))
_SOS: Final = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x00, 0, 63, 0)
_EOB_CODE: Final = "0"
_MAX_COMMENT: Final = 65_533


def _canonical_codes(counts: tuple[int, ...], symbols: tuple[int, ...]) -> dict[int, str]:
    """Huffman codes as the decoder derives them from a DHT (T.81 Annex C)."""
    codes: dict[int, str] = {}
    code, position = 0, 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            codes[symbols[position]] = format(code, f"0{length}b")
            code += 1
            position += 1
        code <<= 1
    return codes


_DC_CODES: Final = _canonical_codes(_DC_COUNTS, _DC_SYMBOLS)


def _scan_data(dc: int) -> bytes:
    category = abs(dc).bit_length()
    extra = (
        "" if category == 0 else format(dc if dc > 0 else dc + (1 << category) - 1, f"0{category}b")
    )
    bits = _DC_CODES[category] + extra + _EOB_CODE
    bits += "1" * (-len(bits) % 8)  # pad with one-bits, as T.81 F.1.2.3 requires
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return raw.replace(b"\xff", b"\xff\x00")  # byte stuffing


def tiny_jpeg(grey: int, comment: bytes = b"") -> bytes:
    """An 8x8 greyscale JPEG of one flat `grey` level (0-255), carrying `comment`."""
    if not 0 <= grey <= 255:
        raise ValueError("grey is 0-255")
    if len(comment) > _MAX_COMMENT:
        raise ValueError("comment too long for one COM segment")
    com = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment if comment else b""
    header = _SOI + _APP0_JFIF + com + _DQT + _SOF0 + _DHT_DC + _DHT_AC + _SOS
    return header + _scan_data(grey - 128) + _EOI
