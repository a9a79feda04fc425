"""The hand-written JPEG and the school calendar behind the synthetic MIS."""

import struct
from datetime import date

import pytest

from agents.mis._synthetic.calendar import (
    academic_year,
    count_between,
    easter_sunday,
    is_school_day,
    school_days,
    school_days_until,
)
from agents.mis.jpeg import tiny_jpeg


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """Walk the marker segments up to the start of scan, as a decoder would."""
    assert data[:2] == b"\xff\xd8"
    out, i = [], 2
    while True:
        assert data[i] == 0xFF
        marker = data[i + 1]
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        out.append((marker, data[i + 4 : i + 2 + length]))
        i += 2 + length
        if marker == 0xDA:
            return out


def test_tiny_jpeg_is_a_well_formed_baseline_greyscale_jpeg() -> None:
    data = tiny_jpeg(200, b"stu-000001")
    segments = dict(_segments(data))
    assert data.endswith(b"\xff\xd9")
    assert segments[0xE0].startswith(b"JFIF\x00")
    assert segments[0xFE] == b"stu-000001"
    precision, height, width, components = struct.unpack(">BHHB", segments[0xC0][:6])
    assert (precision, height, width, components) == (8, 8, 8, 1)
    assert len(segments[0xDB]) == 65  # one 8-bit table of 64 entries
    assert {0xC4, 0xDA} <= segments.keys()


@pytest.mark.parametrize("grey", [0, 1, 127, 128, 129, 200, 255])
def test_tiny_jpeg_scan_data_is_byte_stuffed(grey: int) -> None:
    data = tiny_jpeg(grey)
    header_end = data.index(b"\xff\xda")
    scan = data[header_end + 10 : -2]
    assert scan
    for i, byte in enumerate(scan):
        if byte == 0xFF:
            assert scan[i + 1] == 0x00


def test_tiny_jpeg_differs_by_grey_and_comment() -> None:
    assert tiny_jpeg(100, b"a") != tiny_jpeg(101, b"a")
    assert tiny_jpeg(100, b"a") != tiny_jpeg(100, b"b")


def test_tiny_jpeg_refuses_out_of_range_grey() -> None:
    with pytest.raises(ValueError, match="0-255"):
        tiny_jpeg(256)


@pytest.mark.parametrize(
    ("year", "easter"),
    [(2024, date(2024, 3, 31)), (2025, date(2025, 4, 20)), (2026, date(2026, 4, 5))],
)
def testeaster_sunday_dates(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_academic_year_starts_in_september() -> None:
    assert academic_year(date(2025, 8, 31)) == 2024
    assert academic_year(date(2025, 9, 1)) == 2025


def test_school_days_exclude_weekends_and_holidays() -> None:
    days = school_days(2025)
    assert all(d.weekday() < 5 for d in days)
    assert 185 <= len(days) <= 195  # an English school year is 190 days
    assert not is_school_day(date(2025, 12, 25))
    assert not is_school_day(date(2025, 11, 22))  # Saturday
    assert not is_school_day(date(2025, 10, 29))  # October half term
    assert not is_school_day(date(2026, 4, 6))  # Easter Monday
    assert is_school_day(date(2025, 11, 19))


def test_school_days_until_and_count_between() -> None:
    until = school_days_until(date(2025, 9, 7))
    assert until == (date(2025, 9, 3), date(2025, 9, 4), date(2025, 9, 5))
    assert count_between(until, date(2025, 9, 4), date(2025, 9, 6)) == 2
    assert count_between(until, date(2025, 9, 6), date(2025, 9, 1)) == 0
