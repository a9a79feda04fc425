"""Settings of school-admin authentication."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_", extra="ignore")

    admin_token_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    admin_lockout_failures: int = Field(default=5, ge=1)
    admin_lockout_minutes: float = Field(default=15.0, gt=0)
    # At most one argon2 hash per core at once; a login waits this long for a slot, then 503.
    admin_login_hash_wait_seconds: float = Field(default=1.0, ge=0, le=30)
    # Login attempts per one-minute window, per client IP and per account (email).
    admin_login_per_ip_per_minute: int = Field(default=60, ge=1)
    admin_login_per_account_per_minute: int = Field(default=20, ge=1)
    console_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    console_max_hours: float = Field(default=12.0, gt=0, le=7 * 24)

    @property
    def token_lifetime(self) -> timedelta:
        return timedelta(minutes=self.admin_token_minutes)

    @property
    def console_idle(self) -> timedelta:
        return timedelta(minutes=self.console_idle_minutes)

    @property
    def console_lifetime(self) -> timedelta:
        return timedelta(hours=self.console_max_hours)

    @property
    def lockout_window(self) -> timedelta:
        return timedelta(minutes=self.admin_lockout_minutes)
