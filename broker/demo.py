"""`misbroker up --demo`: a demo school, partner and consent, and a curl line that reads."""

from __future__ import annotations

from broker.settings import Settings


def run_demo(settings: Settings, base_url: str) -> str:
    return f"demo: not yet wired (data dir {settings.data_dir}, {base_url})"
