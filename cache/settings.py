"""Settings of the encrypted cache: key-encryption key source, blob store, tier sizes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CacheSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_", extra="ignore")

    # The key-encryption key: either a secret in the environment or a key file (mode 0600).
    # Neither set: development generates a key file in the data directory.
    kek: SecretStr | None = None
    kek_file: Path | None = None
    # Cold tier; a directory now (S3-compatible later).
    blob_dir: Path | None = None
    hot_ttl_seconds: int = Field(default=900, ge=1)
    # Sealed hot pages each API process keeps in memory (ciphertext; 0 turns it off).
    edge_page_bytes: int = Field(default=64 << 20, ge=0)
    # Areas not read for this long are demoted from warm to cold.
    demote_after_days: float = Field(default=7.0, gt=0)
    # Areas nobody asked for in this long stop being refreshed (and therefore expire).
    unused_area_days: float = Field(default=30.0, gt=0)
    # A closed school's data keys are destroyed after this many days (crypto-shredding).
    closed_school_retention_days: int = Field(default=31, ge=0)
