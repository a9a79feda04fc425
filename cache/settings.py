"""Settings of the encrypted cache: key-encryption key source, blob store, tier sizes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# S3's bucket naming rules (lower case, digits, dots and hyphens, 3 to 63 characters).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    # "" or a prefix ending in "/": every object of this deployment is under it.
    prefix: str


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket` or `s3://bucket/some/prefix`; ValueError saying what is wrong otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError("MISBROKER_BLOB_URL must look like s3://bucket/prefix")
    if parts.query or parts.fragment or parts.username or parts.password or parts.port:
        raise ValueError(
            "MISBROKER_BLOB_URL holds only the bucket and a prefix: put the endpoint in "
            "MISBROKER_BLOB_ENDPOINT_URL and credentials in MISBROKER_BLOB_ACCESS_KEY_ID and "
            "MISBROKER_BLOB_SECRET_ACCESS_KEY"
        )
    bucket = parts.hostname or ""
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(f"MISBROKER_BLOB_URL: {bucket!r} is not a valid S3 bucket name")
    prefix = parts.path.strip("/")
    if prefix and (not _PREFIX_RE.match(prefix) or ".." in prefix):
        raise ValueError(f"MISBROKER_BLOB_URL: {prefix!r} is not a usable key prefix")
    return S3Location(bucket, f"{prefix}/" if prefix else "")


class CacheSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_", extra="ignore")

    # The key-encryption key: either a secret in the environment or a key file (mode 0600).
    # Neither set: development generates a key file in the data directory.
    kek: SecretStr | None = None
    kek_file: Path | None = None
    # Cold tier: a directory (default DATA_DIR/blobs), or an S3-compatible bucket when
    # blob_url is set (`s3://bucket/prefix`); then the directory is not used.
    blob_dir: Path | None = None
    blob_url: str | None = None
    # The S3 API's address (SeaweedFS, MinIO, Ceph...); unset means AWS for the region.
    blob_endpoint_url: str | None = None
    blob_region: str | None = None
    # Unset: boto3's own chain (environment, instance or pod role, config files).
    blob_access_key_id: SecretStr | None = None
    blob_secret_access_key: SecretStr | None = None
    # Attempts per S3 call, with exponential backoff and jitter between them (botocore's
    # "standard" retry mode: connection errors, throttling and 5xx are retried).
    blob_max_attempts: int = Field(default=5, ge=1, le=20)
    # Blobs this large or larger are uploaded in parts of this size (S3's minimum is 5 MiB).
    blob_multipart_bytes: int = Field(default=8 << 20, ge=5 << 20)
    hot_ttl_seconds: int = Field(default=900, ge=1)
    # Sealed hot pages each API process keeps in memory (ciphertext; 0 turns it off).
    edge_page_bytes: int = Field(default=64 << 20, ge=0)
    # Areas not read for this long are demoted from warm to cold.
    demote_after_days: float = Field(default=7.0, gt=0)
    # Areas nobody asked for in this long stop being refreshed (and therefore expire).
    unused_area_days: float = Field(default=30.0, gt=0)
    # A closed school's data keys are destroyed after this many days (crypto-shredding).
    closed_school_retention_days: int = Field(default=31, ge=0)

    @field_validator("blob_url")
    @classmethod
    def _blob_url_is_s3(cls, value: str | None) -> str | None:
        if value is not None:
            parse_s3_url(value)
        return value

    @property
    def blob_location(self) -> S3Location | None:
        return None if self.blob_url is None else parse_s3_url(self.blob_url)
