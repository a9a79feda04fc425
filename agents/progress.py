"""Progress bars for long work, on a terminal only: a file, pipe or service log gets nothing.

Shared by the agent (full extracts and uploads) and the broker's CLI (purge, key rewrap,
the demo load), so every bar looks the same and none ever reaches a log.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Never

from tqdm import tqdm


def on_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress(total: int | None, desc: str, unit: str) -> Iterator[tqdm[Never]]:
    """A bar on standard error while the block runs; disabled (silent) off a terminal."""
    with tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not on_terminal(),
        leave=False,  # the command's own summary line is what stays on screen
        dynamic_ncols=True,
    ) as bar:
        yield bar
