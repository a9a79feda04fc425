"""Per-partner rate limits, shared by every API process through Redis (`limits`)."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from broker.errors import TooManyRequestsError


def _storage_uri(redis_url: str) -> str:
    # `limits` spells schemes its own way; the socket form is redis+unix:///path.
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class PartnerRateLimiter:
    def __init__(self, redis_url: str) -> None:
        self._storage = RedisStorage(_storage_uri(redis_url), implementation="redispy")
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def hit(self, partner_id: str, per_minute: int) -> None:
        """Count one request; raise 429 with Retry-After once the partner's limit is spent."""
        item = RateLimitItemPerMinute(per_minute)
        if await self._limiter.hit(item, "partner", partner_id):
            return
        stats = await self._limiter.get_window_stats(item, "partner", partner_id)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequestsError(
            f"rate limit of {per_minute} requests per minute reached",
            headers={"Retry-After": str(retry_after)},
            limit_per_minute=per_minute,
        )
