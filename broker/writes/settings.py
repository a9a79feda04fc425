"""Settings of write-back (env prefix `MISBROKER_WRITE_`)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WriteSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_WRITE_", extra="ignore")

    # A write the agent has not fetched within this long expires (`write.failed`, expired).
    expire_hours: float = Field(default=24.0, gt=0, le=24 * 14)
    # A finished write's payload is deleted this long after it finished; status stays.
    purge_days: float = Field(default=30.0, ge=0, le=365)
    # Records in one write.
    max_records: int = Field(default=1000, ge=1, le=1000)

    @property
    def expire_after(self) -> timedelta:
        return timedelta(hours=self.expire_hours)

    @property
    def purge_after(self) -> timedelta:
        return timedelta(days=self.purge_days)
