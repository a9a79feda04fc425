"""The on-prem agent: extracts a school's MIS, uploads deltas, runs the broker's commands.

Imports only the standard library, `consent.areas`, httpx, tenacity, psutil and orjson, so
it installs on a school server without the broker's server stack.
"""

from __future__ import annotations

from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("misbroker")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0+source"


__version__ = _version()
