"""Settings of webhook delivery (env prefix `MISBROKER_WEBHOOK_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.settings import Environment
from broker.webhooks.addresses import UrlPolicy, parse_networks
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
    # Comma list of CIDRs partners may be on although not public (`10.20.0.0/16,fd12::/48`).
    # Metadata addresses stay refused whatever this says.
    allowed_networks: str = ""

    @field_validator("allowed_networks")
    @classmethod
    def _networks_parse(cls, value: str) -> str:
        parse_networks(value)  # a ValueError here names the setting at start, not at delivery
        return value

    def url_policy(self, environment: Environment) -> UrlPolicy:
        return UrlPolicy(
            loopback_http=environment in (Environment.DEVELOPMENT, Environment.TEST),
            allowed_networks=parse_networks(self.allowed_networks),
        )

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            timeout=self.timeout_seconds,
            window=timedelta(hours=self.retry_window_hours),
            lease=timedelta(seconds=max(120.0, 2 * self.timeout_seconds)),
        )
