"""What every CLI command shares: settings, resources, output, and bad-input errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson
import redis
import redis.asyncio as aredis
from sqlmodel import Session

from broker.db import ensure_migrated, session_scope, upgrade
from broker.partners.tokens import revoke_partner_tokens
from broker.resources import Resources
from broker.settings import Settings, load_settings


class CliError(Exception):
    """Bad input or an unusable deployment: one line on stderr, exit code 2."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 2) -> NoReturn:
    raise CliError(message, exit_code)


@dataclass
class CliState:
    data_dir: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _resources: Resources | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.data_dir)
        return self._settings

    def resources(self) -> Resources:
        if self._resources is None:
            resources = Resources.build(self.settings)
            if self.settings.production:
                ensure_migrated(resources.engine)
            else:
                upgrade(resources.engine)  # the embedded deployment just works
            self._resources = resources
        return self._resources

    @contextmanager
    def unit_of_work(self) -> Iterator[tuple[Resources, Session]]:
        """Check what must be reachable first, then one transaction: all or nothing."""
        resources = self.resources()
        self.require_redis()
        with session_scope(resources.engine) as session:
            yield resources, session

    def require_redis(self) -> None:
        """Changes are announced on Redis; refuse before changing anything if it is down.

        The embedded Redis exists only while `misbroker up` runs; with no broker running
        there is nobody to tell, so its absence is fine.
        """
        settings = self.settings
        if settings.embedded_redis and not settings.embedded_redis_socket.exists():
            return
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
        try:
            client.ping()
        except redis.RedisError as exc:
            fail(f"Redis at {redacted(settings.redis_url)} is unreachable: {exc}")
        finally:
            client.close()

    def revoke_partner_tokens(self, partner_id: str) -> None:
        """End a partner's live access tokens now (they live in Redis)."""
        settings = self.settings
        if settings.embedded_redis and not settings.embedded_state_redis_socket.exists():
            return  # no broker running: its tokens went with its Redis
        client = aredis.Redis.from_url(settings.state_redis_url, socket_connect_timeout=3)
        publisher = aredis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)

        async def revoke() -> None:
            try:
                await revoke_partner_tokens(client, partner_id, publisher)
            finally:
                await client.aclose()
                await publisher.aclose()

        asyncio.run(revoke())

    def close(self) -> None:
        if self._resources is not None:
            self._resources.close()


def redacted(url: str) -> str:
    """A URL without its password, fit for a message."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def emit(as_json: bool, obj: dict[str, Any], human: str) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")
