"""Settings of the consent engine."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_GRACE_HOURS = 72.0


class ConsentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_", extra="ignore")

    # A retrospective revocation ends access this long after it was made (DESIGN: 0-72 h).
    revocation_grace_hours: float = Field(default=72.0, ge=0.0, le=MAX_GRACE_HOURS)

    @property
    def revocation_grace(self) -> timedelta:
        return timedelta(hours=self.revocation_grace_hours)
