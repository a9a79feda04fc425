"""Partner access tokens (OAuth 2.0 client credentials), kept in Redis with their TTL.

Opaque random tokens, stored only as SHA-256 digests: Redis (even a dump of it) holds no
usable token.  A per-partner sorted set (by issue time) lets rotation or disabling revoke
every live token at once, and caps a partner's live tokens: minting one more than
`MAX_LIVE_TOKENS` revokes the oldest, so a client that mints in a loop holds a bounded
number of keys.  They live in the state Redis (`Settings.state_redis_url`), which never
evicts: a full cache cannot sign a partner out.

Each API process keeps the tokens it has resolved in a `TokenCache`, so a partner's
requests cost no Redis round trip; a revocation is published on `REVOCATION_CHANNEL` and
every process drops that partner's tokens within milliseconds (`broker.invalidation`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson
import redis.asyncio as aredis

from broker.security import digest_secret, generate_secret

log = logging.getLogger(__name__)

TOKEN_TTL_SECONDS = 3600
MAX_LIVE_TOKENS = 10
_TOKEN_KEY = "mb:pt:{}"  # noqa: S105 - a Redis key pattern, not a secret
_PARTNER_SET = "mb:pts:{}"
_SEQUENCE = "mb:ptseq:{}"
REVOCATION_CHANNEL: Final = "mb:tokens:revoked"
EVERY_PARTNER: Final = "*"


@dataclass(frozen=True, slots=True)
class PartnerPrincipal:
    partner_id: str
    client_id: str
    # Carried in the token so the read path needs no database lookup; a changed limit
    # applies from the partner's next token.
    rate_limit_per_minute: int = 600


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int


async def issue_token(
    redis: aredis.Redis,
    principal: PartnerPrincipal,
    now: datetime,
    ttl: int = TOKEN_TTL_SECONDS,
    *,
    max_live: int = MAX_LIVE_TOKENS,
    publisher: aredis.Redis | None = None,
) -> IssuedToken:
    """A new token; `publisher` is where revocations are heard (default: `redis` itself)."""
    token = generate_secret("mbt")
    digest = digest_secret(token)
    value = orjson.dumps(
        {
            "p": principal.partner_id,
            "c": principal.client_id,
            "rl": principal.rate_limit_per_minute,
            "iat": int(now.timestamp()),
        }
    )
    live = _PARTNER_SET.format(principal.partner_id)
    # Ranked by a per-partner sequence, not by time: tokens minted in one clock tick still
    # have an order.  Expired members rank oldest and are the first dropped.
    seq = await redis.incr(_SEQUENCE.format(principal.partner_id))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(_TOKEN_KEY.format(digest), value, ex=ttl)
        pipe.zadd(live, {digest: seq})
        pipe.expire(live, ttl)
        pipe.expire(_SEQUENCE.format(principal.partner_id), ttl)
        pipe.zcard(live)
        *_, count = await pipe.execute()
    if count > max_live:
        # Not atomic with the mint: racing mints may drop one too many, never keep too many.
        oldest = await redis.zpopmin(live, count - max_live)
        if oldest:
            await redis.delete(*(_TOKEN_KEY.format(_text(pair[0])) for pair in oldest))
            await (publisher or redis).publish(REVOCATION_CHANNEL, principal.partner_id)
    return IssuedToken(access_token=token, expires_in=ttl)


def _text(member: object) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)


async def mint_wait(
    redis: aredis.Redis, partner_id: str, now: datetime, per_minute: int
) -> int | None:
    """Count one mint in the partner's one-minute window (the broker's clock); None if it
    fits, else the seconds until the next window."""
    bucket = int(now.timestamp() // 60)
    key = f"mb:mint:{partner_id}:{bucket}"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
    if int(count) <= per_minute:
        return None
    return max(1, math.ceil((bucket + 1) * 60 - now.timestamp()))


async def resolve_token(redis: aredis.Redis, token: str) -> PartnerPrincipal | None:
    found = await _lookup(redis, digest_secret(token))
    return None if found is None else found[0]


async def _lookup(redis: aredis.Redis, digest: str) -> tuple[PartnerPrincipal, float] | None:
    """The principal and the seconds its token has left, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(_TOKEN_KEY.format(digest))
        pipe.pttl(_TOKEN_KEY.format(digest))
        raw, pttl = await pipe.execute()
    if raw is None or pttl == -2:
        return None
    data = orjson.loads(raw)
    principal = PartnerPrincipal(
        partner_id=data["p"], client_id=data["c"], rate_limit_per_minute=data.get("rl", 600)
    )
    # -1: no TTL (never written so; treat as the longest a token lives).
    return principal, (TOKEN_TTL_SECONDS if pttl < 0 else pttl / 1000)


async def revoke_partner_tokens(
    redis: aredis.Redis, partner_id: str, publisher: aredis.Redis | None = None
) -> int:
    members = await redis.zrange(_PARTNER_SET.format(partner_id), 0, -1)
    keys = [_TOKEN_KEY.format(_text(m)) for m in members]
    removed = int(await redis.delete(*keys)) if keys else 0
    await redis.delete(_PARTNER_SET.format(partner_id))
    # After the delete: a process that reloads on hearing this finds the token gone.
    await (publisher or redis).publish(REVOCATION_CHANNEL, partner_id)
    return removed


class _Held:
    __slots__ = ("deadline", "principal")

    def __init__(self, principal: PartnerPrincipal, deadline: float) -> None:
        self.principal = principal
        self.deadline = deadline


class TokenCache:
    """Tokens this process has resolved, by digest, until the earliest of: the token's
    expiry, `max_age` (a backstop for a lost revocation message; `degraded_max_age` while
    the listener is not subscribed) or a published revocation of the partner's tokens.

    Unknown tokens are not remembered: a token issued by another process a moment ago must
    work at once.  A subscriber of `broker.invalidation.InvalidationListener`.
    """

    def __init__(
        self,
        *,
        max_age: float = 60.0,
        degraded_max_age: float = 1.0,
        max_entries: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age = max_age
        self._degraded_max_age = degraded_max_age
        self._age = degraded_max_age  # until the listener has subscribed
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._held: dict[str, _Held] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def peek(self, token: str) -> PartnerPrincipal | None:
        """The principal if this process holds the token now; None means "ask `resolve`"."""
        held = self._held.get(digest_secret(token))
        if held is None or self._monotonic() >= held.deadline:
            return None
        return held.principal

    async def resolve(self, redis: aredis.Redis, token: str) -> PartnerPrincipal | None:
        digest = digest_secret(token)
        held = self._held.get(digest)
        if held is not None:
            if self._monotonic() < held.deadline:
                return held.principal
            self._held.pop(digest, None)
        generation = self._generation
        started = self._monotonic()
        found = await _lookup(redis, digest)
        if found is None:
            return None
        principal, seconds_left = found
        with self._lock:
            # A revocation heard during the lookup may be about this very token.
            if generation == self._generation:
                if len(self._held) >= self._max_entries:
                    for stale in list(self._held)[: max(1, self._max_entries // 10)]:
                        del self._held[stale]
                deadline = started + min(self._age, seconds_left)
                self._held[digest] = _Held(principal, deadline)
        return principal

    def apply(self, message: str) -> None:
        """A partner's tokens were revoked (`EVERY_PARTNER`: every partner's)."""
        with self._lock:
            self._generation += 1
            if message == EVERY_PARTNER:
                self._held.clear()
                return
            for digest in [d for d, h in self._held.items() if h.principal.partner_id == message]:
                del self._held[digest]

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self._age = self._max_age if connected else self._degraded_max_age
            self._generation += 1
            self._held.clear()
