"""Settings of webhook delivery (env prefix `MISBROKER_WEBHOOK_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.webhooks.policy import RetryPolicy


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_WEBHOOK_", extra="ignore")

    # A receiver gets this long to answer (connect, send and read alike).
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Retries stop, and the delivery is marked failed, this long after it was queued.
    retry_window_hours: float = Field(default=24.0, gt=0, le=72)
    # Per task run: outbox events fanned out, deliveries attempted.
    fan_out_batch: int = Field(default=100, ge=1, le=1000)
    deliver_batch: int = Field(default=20, ge=1, le=1000)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            timeout=self.timeout_seconds,
            window=timedelta(hours=self.retry_window_hours),
            lease=timedelta(seconds=max(120.0, 2 * self.timeout_seconds)),
        )
