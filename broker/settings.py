"""Settings of the broker process, composed with the consent and cache settings.

Every value comes from the environment (prefix `MISBROKER_`) or from defaults derived from
one data directory, so the embedded deployment needs no configuration at all and a
production one is the same code pointed at PostgreSQL, Redis and a blob store.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cache.settings import CacheSettings
from consent.settings import ConsentSettings

DEFAULT_DATA_DIR = Path(".misbroker")
# Unix socket paths are limited to 107 bytes.
_MAX_SOCKET_PATH = 100

_PLACEHOLDER = re.compile(
    r"^(change[-_ ]?me|changeit|secret|password|passw0rd|placeholder|example|default|"
    r"test|todo|xxx+|dev|development|insecure|0+|1234.*)$",
    re.IGNORECASE,
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    AUTO = "auto"
    HUMAN = "human"
    JSON = "json"


class SettingsError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISBROKER_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    # Celery's queue; defaults to the Redis above.  At scale, a Redis with `noeviction`.
    celery_broker_url: SecretStr | None = None
    # Security state: partner tokens, login lockout reservations, rate-limit counters.  Must
    # be a Redis that never evicts (`noeviction`); defaults to Celery's, which must be too.
    state_redis_url: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Memory bound of the embedded cache Redis (it evicts: it holds only what can be rebuilt).
    embedded_redis_maxmemory: str = "256mb"
    # Memory bound of the embedded state Redis (never evicts: full means writes fail).
    embedded_state_redis_maxmemory: str = "128mb"
    # Access tokens minted per client per minute; more get 429 with Retry-After.
    token_mint_per_minute: int = Field(default=30, ge=1)
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    # A task not acknowledged within this is given to another worker (acks_late: a worker
    # killed mid-task).  Longer than any task runs, or a slow one runs twice at once.
    celery_visibility_timeout_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    log_level: str = "INFO"
    # "system", or "file:PATH" (an RFC 3339 time in a file; not in production).
    clock: str = "system"
    # Agent uploads: limit on the body as sent and once inflated (gzip bombs stop here).
    upload_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    upload_max_compressed_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Records plus deleted ids in one upload; a longer upload is refused before validation.
    upload_max_records: int = Field(default=500_000, ge=1)
    # JSON values (items, members) in one inflated upload, counted before it is parsed: what
    # bounds the memory of parsing (~64 bytes a value), as tiny values parse to big objects.
    upload_max_values: int = Field(default=8_000_000, ge=1000)
    # Every other request body (API JSON, console forms), enforced before parsing or auth.
    body_max_bytes: int = Field(default=64 * 1024, ge=1024)
    # Nesting of any JSON body; ours are at most a few levels deep.
    json_max_depth: int = Field(default=32, ge=4, le=256)
    # Send Strict-Transport-Security.  Unset: on exactly when the broker serves TLS itself;
    # set it true when TLS terminates in front (an ingress), false to never send it.
    hsts: bool | None = None
    # TLS served by the API process itself (PEM certificate chain and its private key).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Log lines: `human` (time, process, message), `json` (one object a line) or `auto`:
    # human when standard error is a terminal, JSON for files, pipes and production.
    log_format: LogFormat = LogFormat.AUTO
    # In production `/metrics` answers only `Authorization: Bearer <token>`, and 404 without it.
    metrics_token: SecretStr | None = None
    # An agent with no heartbeat for this long is flagged to operators and the school.
    agent_silent_after_minutes: int = Field(default=15, ge=1)
    # Base URL that partners and admins use, for links in problems and the demo's curl line.
    public_url: str | None = None

    @property
    def effective_log_format(self) -> LogFormat:
        """`auto` is JSON in production, whatever the terminal: log collectors parse it."""
        if self.log_format is LogFormat.AUTO and self.environment is Environment.PRODUCTION:
            return LogFormat.JSON
        return self.log_format

    @property
    def serves_tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def sends_hsts(self) -> bool:
        return self.serves_tls if self.hsts is None else self.hsts


@dataclass(frozen=True)
class Settings:
    """Everything a process of the broker needs, resolved against the data directory."""

    broker: BrokerSettings
    consent: ConsentSettings
    cache: CacheSettings

    @property
    def data_dir(self) -> Path:
        return self.broker.data_dir.resolve()

    @property
    def production(self) -> bool:
        return self.broker.environment is Environment.PRODUCTION

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def database_url(self) -> str:
        if self.broker.database_url is not None:
            return self.broker.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'misbroker.db'}"

    @property
    def embedded_redis(self) -> bool:
        return self.broker.redis_url is None

    @property
    def embedded_redis_socket(self) -> Path:
        return self._socket("redis.sock")

    @property
    def embedded_state_redis_socket(self) -> Path:
        return self._socket("state-redis.sock")

    def _socket(self, name: str) -> Path:
        sock = self.run_dir / name
        if len(str(sock)) <= _MAX_SOCKET_PATH:
            return sock
        # A deep data directory: a short path that is still unique to it.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"misbroker-{digest}-{name}"

    @property
    def redis_url(self) -> str:
        if self.broker.redis_url is not None:
            return self.broker.redis_url.get_secret_value()
        return f"unix://{self.embedded_redis_socket}"

    @property
    def celery_broker_url(self) -> str:
        if self.broker.celery_broker_url is not None:
            return self.broker.celery_broker_url.get_secret_value()
        url = self.state_redis_url
        # kombu spells a Redis unix socket `redis+socket://`.
        return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url

    @property
    def state_redis_url(self) -> str:
        """Security state (tokens, lockouts, rate limits) and, by default, Celery's queue.

        Never the cache Redis when that one may evict: explicit, else Celery's broker, else
        (embedded) a second server that never evicts, else the one Redis there is (which an
        operator must then run with `noeviction`).
        """
        if self.broker.state_redis_url is not None:
            return self.broker.state_redis_url.get_secret_value()
        if self.broker.celery_broker_url is not None:
            url = self.broker.celery_broker_url.get_secret_value()
            return "unix://" + url.removeprefix("redis+socket://") if "+socket://" in url else url
        if self.embedded_redis:
            return f"unix://{self.embedded_state_redis_socket}"
        return self.redis_url

    @property
    def blob_dir(self) -> Path:
        return (self.cache.blob_dir or self.data_dir / "blobs").resolve()

    @property
    def kek_file(self) -> Path:
        return (self.cache.kek_file or self.data_dir / "secrets" / "kek.json").resolve()

    @property
    def public_url(self) -> str:
        scheme = "https" if self.broker.serves_tls else "http"
        return self.broker.public_url or f"{scheme}://{self.broker.host}:{self.broker.port}"

    def check(self) -> None:
        """Refuse configurations that must never run; in production, refuse placeholders."""
        if not self.production:
            return
        problems: list[str] = []
        if self.cache.kek is None and self.cache.kek_file is None:
            problems.append("MISBROKER_KEK or MISBROKER_KEK_FILE must be set in production")
        if self.cache.kek is not None and is_placeholder(self.cache.kek.get_secret_value()):
            problems.append("MISBROKER_KEK is a placeholder")
        for name, url in (
            ("MISBROKER_DATABASE_URL", self.broker.database_url),
            ("MISBROKER_REDIS_URL", self.broker.redis_url),
            ("MISBROKER_CELERY_BROKER_URL", self.broker.celery_broker_url),
        ):
            if url is None:
                problems.append(f"{name} must be set in production")
            elif url_has_placeholder_password(url.get_secret_value()):
                problems.append(f"{name} carries a placeholder password")
        secret = self.cache.blob_secret_access_key
        if secret is not None and is_placeholder(secret.get_secret_value()):
            problems.append("MISBROKER_BLOB_SECRET_ACCESS_KEY is a placeholder")
        if self.broker.clock != "system":
            problems.append("MISBROKER_CLOCK must be 'system' in production")
        if problems:
            raise SettingsError("; ".join(problems))


def is_placeholder(secret: str) -> bool:
    return len(secret.strip()) < 8 or _PLACEHOLDER.match(secret.strip()) is not None


def url_has_placeholder_password(url: str) -> bool:
    password = urlsplit(url).password
    return password is not None and is_placeholder(password)


def load_settings(data_dir: Path | None = None) -> Settings:
    """Read settings from the environment; `data_dir` (the CLI's --data-dir) wins over env."""
    broker = BrokerSettings() if data_dir is None else BrokerSettings(data_dir=data_dir)
    settings = Settings(broker=broker, consent=ConsentSettings(), cache=CacheSettings())
    settings.check()
    return settings
