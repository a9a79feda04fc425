"""The retry schedule: Standard Webhooks steps, ±20% jitter, capped by the window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.webhooks.policy import STANDARD_SCHEDULE, RetryPolicy
from broker.webhooks.settings import WebhookSettings
from tests.conftest import T0


def fixed(value: float) -> RetryPolicy:
    return RetryPolicy(rng=lambda: value)


def test_without_jitter_the_steps_are_the_standard_ones_and_the_last_repeats() -> None:
    policy = fixed(0.5)
    assert [policy.delay(n) for n in range(1, 10)] == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
        timedelta(hours=10),
        timedelta(hours=10),
    ]


def test_jitter_spans_twenty_percent_either_way() -> None:
    assert fixed(0.0).delay(2) == timedelta(minutes=4)
    assert fixed(0.999999).delay(2) == pytest.approx(timedelta(minutes=6), abs=timedelta(seconds=1))


@given(failures=st.integers(1, 60), draw=st.floats(0.0, 1.0, exclude_max=True))
def test_every_delay_is_within_the_jitter_of_its_step(failures: int, draw: float) -> None:
    base = STANDARD_SCHEDULE[min(failures, len(STANDARD_SCHEDULE)) - 1]
    assert base * 0.8 <= fixed(draw).delay(failures) <= base * 1.2


def test_the_system_random_jitter_stays_in_bounds_and_varies() -> None:
    policy = RetryPolicy()
    delays = {policy.delay(1) for _ in range(200)}
    assert all(timedelta(seconds=4) <= d <= timedelta(seconds=6) for d in delays)
    assert len(delays) > 100


def test_the_next_attempt_is_capped_by_the_window_and_none_after_it() -> None:
    policy = fixed(0.5)
    end = T0 + timedelta(hours=24)
    assert policy.next_attempt(1, T0, end) == T0 + timedelta(seconds=5)
    late = end - timedelta(hours=1)
    assert policy.next_attempt(7, late, end) == end
    assert policy.next_attempt(8, end, end) is None
    assert policy.next_attempt(8, end + timedelta(seconds=1), end) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": ()},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"timeout": 30.0, "lease": timedelta(seconds=30)},
    ],
)
def test_unusable_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"retry schedule|lease"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WebhookSettings().policy().timeout == 10.0
    monkeypatch.setenv("MISBROKER_WEBHOOK_TIMEOUT_SECONDS", "90")
    with pytest.raises(ValueError, match="timeout_seconds"):
        WebhookSettings()
    monkeypatch.setenv("MISBROKER_WEBHOOK_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("MISBROKER_WEBHOOK_RETRY_WINDOW_HOURS", "12")
    policy = WebhookSettings().policy()
    assert (policy.timeout, policy.window) == (3.0, timedelta(hours=12))
    assert policy.lease.total_seconds() > policy.timeout
