"""The soak of `bench/soak.py`, short: the bounds of issue 12 under mixed load and faults.

`misbroker up` in a temporary data dir, its capacity measured, then mixed traffic at 80% of
it for `MISBROKER_SOAK_MINUTES` (0.5 by default; the bench runs 5) with a Redis restart and
a killed Celery pool process.  The bounds are the bench's, and relative to the same run.
"""

from __future__ import annotations

import os

import pytest

from bench.soak import RSS_BOUND, soak

pytestmark = pytest.mark.slow

MINUTES = float(os.environ.get("MISBROKER_SOAK_MINUTES", "0.5"))


@pytest.mark.timeout(600 + int(MINUTES * 60))
def test_a_short_soak_keeps_every_bound() -> None:
    report = soak(MINUTES, connections=16)
    summary = "\n".join(report.lines())
    print(summary)
    assert report.sent > 0, summary
    assert report.errors_5xx_outside.total() == 0, summary
    assert report.window_seconds < 30, summary
    assert report.uploads_acked > 0, summary
    assert report.uploads_lost == 0, summary
    assert report.reads_200 > 0, summary
    assert report.reads_unlogged == 0, summary
    assert report.rss_end_mb <= RSS_BOUND * report.rss_start_mb, summary
    assert report.worker_respawned, summary
    assert report.worker_task_done, summary
    assert report.audit_ok, summary
