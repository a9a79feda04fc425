"""One Redis pub/sub listener per API process, feeding every in-process cache its
invalidations (consent decisions, access tokens, cached-area state and sealed pages).

Each cache is a `Subscriber` on its own channel.  Pub/sub delivers at most once, so the
listener also proves its link with a ping every `ping_interval` and tells every subscriber
when it is not (or no longer) subscribed: a subscriber then trusts nothing it loaded before
and keeps entries only briefly until the link is back.  Every (re)subscription is
reported as a fresh connection, since messages sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol

import redis
import redis.asyncio as aredis

log = logging.getLogger(__name__)

MAX_RETRY_DELAY: Final = 5.0
STOP_TIMEOUT_SECONDS: Final = 2.0


class Subscriber(Protocol):
    def apply(self, message: str) -> None:
        """Act on one message published on the subscriber's channel."""

    def set_connected(self, connected: bool) -> None:
        """Subscribed (messages will arrive) or not; either way, drop what was loaded."""


class InvalidationListener:
    """Applies published invalidations to the subscribers; an asyncio task per process."""

    def __init__(
        self,
        subscribers: Mapping[str, Subscriber],
        redis_url: str,
        *,
        ping_interval: float = 1.0,
        retry_delay: float = 0.25,
    ) -> None:
        if not subscribers:
            raise ValueError("an invalidation listener needs at least one channel")
        self.subscribers = dict(subscribers)
        self.redis_url = redis_url
        self.ping_interval = ping_interval
        self.retry_delay = retry_delay
        self.subscribed = asyncio.Event()
        self._was_subscribed = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="invalidation-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Closing a pub/sub connection cancelled mid-read can stall; shutdown must not.
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_SECONDS)
            if not done:
                log.warning("invalidation listener did not stop in time; abandoned")
            self._task = None
        self._disconnected()

    def _disconnected(self) -> None:
        self.subscribed.clear()
        for subscriber in self.subscribers.values():
            subscriber.set_connected(False)

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            try:
                await self._listen()
            except (redis.RedisError, OSError) as exc:
                log.warning("invalidation listener disconnected: %s", exc)
            except Exception:  # a bad message or a bug: the caches must not stay degraded
                log.exception("invalidation listener failed; reconnecting")
            finally:
                self._disconnected()
            # Back off while Redis stays away (the caches are on their short backstop).
            delay = self.retry_delay if self._was_subscribed else min(delay * 2, MAX_RETRY_DELAY)
            self._was_subscribed = False
            await asyncio.sleep(delay)

    async def _listen(self) -> None:
        client = aredis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=5)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(*self.subscribers)
            pending = set(self.subscribers)  # channels whose subscription is not confirmed
            last_seen = last_ping = time.monotonic()
            while True:
                message = await pubsub.get_message(timeout=self.ping_interval)
                now = time.monotonic()
                if message is not None:
                    last_seen = now
                    self._handle(message, pending)
                if now - last_ping >= self.ping_interval:
                    await pubsub.ping()  # answered as a "pong" message: proves the link
                    last_ping = now
                if now - last_seen > 3 * self.ping_interval:
                    raise redis.ConnectionError("no pong from Redis; reconnecting")
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    def _handle(self, message: dict[str, Any], pending: set[str]) -> None:
        kind = message["type"]
        channel = _text(message.get("channel"))
        subscriber = self.subscribers.get(channel)
        if kind == "subscribe" and subscriber is not None:
            # Also sent again when redis-py resubscribes by itself after a reconnect.
            subscriber.set_connected(True)
            pending.discard(channel)
            if not pending:
                self.subscribed.set()
                self._was_subscribed = True
        elif kind == "message" and subscriber is not None:
            subscriber.apply(_text(message["data"]))


def _text(value: Any) -> str:
    # Undecodable bytes become U+FFFD: such a message is malformed, and each subscriber
    # treats a malformed message as "drop everything".
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
