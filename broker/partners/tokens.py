"""Partner access tokens (OAuth 2.0 client credentials), kept in Redis with their TTL.

Opaque random tokens, stored only as SHA-256 digests: Redis (even a dump of it) holds no
usable token.  A per-partner set lets rotation or disabling revoke every live token at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson
import redis.asyncio as aredis

from broker.security import digest_secret, generate_secret

TOKEN_TTL_SECONDS = 3600
_TOKEN_KEY = "mb:pt:{}"  # noqa: S105 - a Redis key pattern, not a secret
_PARTNER_SET = "mb:pts:{}"


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
    redis: aredis.Redis, principal: PartnerPrincipal, now: datetime, ttl: int = TOKEN_TTL_SECONDS
) -> IssuedToken:
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
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(_TOKEN_KEY.format(digest), value, ex=ttl)
        pipe.sadd(_PARTNER_SET.format(principal.partner_id), digest)
        pipe.expire(_PARTNER_SET.format(principal.partner_id), ttl)
        await pipe.execute()
    return IssuedToken(access_token=token, expires_in=ttl)


async def resolve_token(redis: aredis.Redis, token: str) -> PartnerPrincipal | None:
    raw = await redis.get(_TOKEN_KEY.format(digest_secret(token)))
    if raw is None:
        return None
    data = orjson.loads(raw)
    return PartnerPrincipal(
        partner_id=data["p"], client_id=data["c"], rate_limit_per_minute=data.get("rl", 600)
    )


async def revoke_partner_tokens(redis: aredis.Redis, partner_id: str) -> int:
    members = await redis.smembers(_PARTNER_SET.format(partner_id))
    keys = [_TOKEN_KEY.format(m.decode() if isinstance(m, bytes) else m) for m in members]
    removed = int(await redis.delete(*keys)) if keys else 0
    await redis.delete(_PARTNER_SET.format(partner_id))
    return removed
