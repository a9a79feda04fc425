"""A school MIS whose `students.photos` are real-sized JPEGs (20-50 KB), for the large-area tests.

The synthetic MIS's photos are 8x8 placeholders of a few hundred bytes; these carry
incompressible COM segments so that an area's JSON is as large as a real school's.
"""

from __future__ import annotations

import base64
import csv
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.mis.base import AdapterError
from agents.mis.jpeg import tiny_jpeg

AREA = "students.photos"
_COM_MAX = 65_533
_AFTER_APP0 = 20  # SOI (2) + APP0 marker (2) + its 16-byte segment


def jpeg_of_size(rng: random.Random, size: int) -> bytes:
    """A valid greyscale JPEG of about `size` bytes (random COM segments pad it)."""
    base = tiny_jpeg(rng.randrange(48, 208))
    padding, left = [], max(0, size - len(base))
    while left > 4:
        chunk = min(_COM_MAX, left - 4)
        padding.append(b"\xff\xfe" + struct.pack(">H", chunk + 2) + rng.randbytes(chunk))
        left -= chunk + 4
    return base[:_AFTER_APP0] + b"".join(padding) + base[_AFTER_APP0:]


class PhotoMis:
    """`students.photos` only: one photo per pupil, ids P00000, P00001, ..."""

    name = "photos"

    def __init__(
        self, pupils: int, *, seed: int = 1, sizes: tuple[int, int] = (20_000, 50_000)
    ) -> None:
        self._rng = random.Random(seed)
        self._sizes = sizes
        self.photos: dict[str, bytes] = {}
        for index in range(pupils):
            self.photos[f"P{index:05d}"] = self._new_photo()

    def _new_photo(self, size: int | None = None) -> bytes:
        return jpeg_of_size(self._rng, size or self._rng.randint(*self._sizes))

    def areas(self) -> frozenset[str]:
        return frozenset({AREA})

    def extract(self, area: str) -> Iterator[dict[str, Any]]:
        if area != AREA:
            raise AdapterError(f"area {area!r} is not provided by the photo MIS")
        return iter(
            [
                {"id": i, "photo": base64.b64encode(jpeg).decode("ascii"), "photo_available": True}
                for i, jpeg in self.photos.items()
            ]
        )

    def records(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.extract(AREA)}

    def remove(self, ids: list[str]) -> None:
        for record_id in ids:
            del self.photos[record_id]

    def retake(self, ids: list[str], size: int | None = None) -> None:
        """New photos for these pupils (a changed record each)."""
        for record_id in ids:
            self.photos[record_id] = self._new_photo(size)

    def admit(self, ids: list[str]) -> None:
        for record_id in ids:
            self.photos[record_id] = self._new_photo()

    def write_csv_export(self, directory: Path) -> None:
        """The same photos as a `csv` adapter export: a CSV naming one JPEG file per pupil."""
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / f"{AREA}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "photo", "photo_available"])
            for record_id, jpeg in self.photos.items():
                (directory / f"{record_id}.jpg").write_bytes(jpeg)
                writer.writerow([record_id, f"{record_id}.jpg", "yes"])
