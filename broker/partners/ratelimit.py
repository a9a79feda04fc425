"""Per-partner rate limits, admitted in-process and shared by every API process through Redis.

A sliding-window counter over one-minute buckets keyed by the wall-clock epoch minute
(`mb:rl:{partner_id}:{bucket}`): at `elapsed` seconds into the current bucket the
partner's rate is estimated as `prev * (1 - elapsed / 60) + curr`, and a request is
admitted only if the estimate stays within the limit once it is counted.

`hit` does no I/O. Each process keeps, per partner, the totals it last read from Redis
plus the hits it has admitted and not yet flushed, and admits on their sum; a background
task flushes and re-reads every partner in one pipelined round trip per `sync_interval`.
Within one process the limit is exact. Across N processes a partner may overshoot by at
most what the other processes admit between two syncs: one `sync_interval`, or until the
first sync for a process that has no view of the partner yet (just started, or the
partner was idle for two minutes there). If Redis is down, processes keep admitting on
their own counts and flush them once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from broker.errors import TooManyRequestsError

log = logging.getLogger(__name__)

WINDOW = 60  # seconds per bucket
KEY_TTL = 2 * WINDOW  # a bucket is read until the end of the next one
IDLE_FORGET = 2 * WINDOW  # by then every hit of the partner has left the window
STALE_VIEW = 1.0  # re-read an active partner's totals this often even when it is quiet
REDIS_TIMEOUT = 1.0
STOP_TIMEOUT = 2.0


def admits(prev: int, curr: int, limit: int, elapsed: float) -> bool:
    """Whether one more request fits: `prev * (1 - elapsed/60) + curr + 1 <= limit`."""
    # Multiplied through by the window so whole-second times compare exactly.
    return prev * (WINDOW - elapsed) + WINDOW * (curr + 1) <= WINDOW * limit


def retry_after(prev: int, curr: int, limit: int, elapsed: float) -> int:
    """Whole seconds (at least 1) until `admits` holds again, if no request is counted meanwhile.

    Within the current bucket only `prev` decays, so that helps only while `curr` leaves
    room; otherwise wait for the next bucket, where `curr` becomes the decaying count.
    """
    room = limit - 1  # the largest estimate that still lets one request in
    if curr <= room and prev > 0:
        # Integer numerators: a whole-second answer comes out exact, not one second late.
        at = WINDOW - WINDOW * (room - curr) / prev  # seconds into the current bucket
    elif curr > 0 and room >= 0:
        at = 2 * WINDOW - WINDOW * room / curr  # into the next bucket: (60, 120]
    elif room >= 0:
        at = elapsed  # nothing counted: it fits now
    else:
        at = 2 * WINDOW  # a zero limit never admits; say two windows
    return max(1, math.ceil(at - elapsed))


@dataclass(slots=True)
class _Partner:
    """What one process knows of one partner's counts."""

    bucket: int  # the bucket `synced_curr` belongs to
    last_seen: float
    synced_curr: int = 0
    synced_prev: int = 0
    synced_at: float = -math.inf
    pending: dict[int, int] = field(default_factory=dict)  # bucket -> hits not yet flushed

    def totals(self, bucket: int) -> tuple[int, int]:
        """(prev, curr) as this process sees them, moving the view on to `bucket` first."""
        if bucket != self.bucket:
            self.synced_prev = self.synced_curr if bucket == self.bucket + 1 else 0
            self.synced_curr = 0
            self.bucket = bucket
        pending = self.pending
        return (
            self.synced_prev + pending.get(bucket - 1, 0),
            self.synced_curr + pending.get(bucket, 0),
        )


def _key(partner_id: str, bucket: int) -> str:
    return f"mb:rl:{partner_id}:{bucket}"


class PartnerRateLimiter:
    def __init__(
        self,
        redis_url: str,
        *,
        sync_interval: float = 0.05,
        wall: Callable[[], float] = time.time,
    ) -> None:
        # No retries inside redis-py: a failed sync keeps its hits pending for the next one.
        self._redis = Redis.from_url(
            redis_url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._interval = sync_interval
        self._wall = wall
        self._partners: dict[str, _Partner] = {}
        self._sync_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def _now(self) -> tuple[float, int, float]:
        now = self._wall()
        bucket = int(now // WINDOW)
        return now, bucket, now - bucket * WINDOW

    def hit(self, partner_id: str, per_minute: int) -> None:
        """Count one request; raise 429 with Retry-After once the partner's limit is spent."""
        now, bucket, elapsed = self._now()
        state = self._partners.get(partner_id)
        if state is None:
            state = self._partners[partner_id] = _Partner(bucket=bucket, last_seen=now)
        elif bucket < state.bucket:  # the wall clock stepped back: stay in the newer bucket
            bucket, elapsed = state.bucket, 0.0
        state.last_seen = now
        prev, curr = state.totals(bucket)
        if admits(prev, curr, per_minute, elapsed):
            state.pending[bucket] = state.pending.get(bucket, 0) + 1
            return
        wait = retry_after(prev, curr, per_minute, elapsed)
        raise TooManyRequestsError(
            f"rate limit of {per_minute} requests per minute reached",
            headers={"Retry-After": str(wait)},
            limit_per_minute=per_minute,
        )

    async def start(self) -> None:
        """Start syncing with Redis in the background."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="partner-rate-limit-sync")

    async def stop(self) -> None:
        """Stop syncing, flush what is pending, close the client; bounded even if Redis hangs."""
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT
        flushed = False
        with contextlib.suppress(TimeoutError):
            if self._task is not None:
                await asyncio.wait_for(self._task, STOP_TIMEOUT)
            flushed = await asyncio.wait_for(self.sync_now(), max(deadline - loop.time(), 0.1))
        self._task = None
        if not flushed and any(state.pending for state in self._partners.values()):
            log.warning("partner rate limits: hits admitted before shutdown were not flushed")
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._redis.aclose(), REDIS_TIMEOUT)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            if self._stopping.is_set():
                return
            try:
                await self.sync_now()
            except Exception:  # the loop must outlive a bug in one sync
                log.exception("partner rate limits: sync failed unexpectedly")

    async def sync_now(self) -> bool:
        """Flush pending hits and re-read totals in one round trip; False if Redis failed."""
        async with self._sync_lock:
            return await self._sync()

    async def _sync(self) -> bool:
        now, bucket, _ = self._now()
        batch = self._due(now, bucket)
        if not batch:
            return True
        try:
            # No MULTI: each INCRBY is atomic on its own, and keys of many partners may sit
            # on different Redis Cluster slots.  A reply lost after Redis applied the
            # pipeline leaves the hits pending, to be counted again: errs towards 429.
            async with self._redis.pipeline(transaction=False) as pipe:
                for partner_id, flush in batch:
                    for b, n in flush.items():
                        pipe.incrby(_key(partner_id, b), n)
                        pipe.expire(_key(partner_id, b), KEY_TTL)
                    for b in (bucket - 1, bucket):
                        if b not in flush:
                            pipe.get(_key(partner_id, b))
                replies = iter(await pipe.execute())
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                # The exception's type only: its text may carry the URL and its password.
                log.warning(
                    "partner rate limits: Redis sync failed (%s); admitting on local counts",
                    type(exc).__name__,
                )
                self._failing = True
            return False
        if self._failing:
            log.info("partner rate limits: Redis sync recovered")
            self._failing = False
        for partner_id, flush in batch:
            self._apply(partner_id, flush, bucket, now, replies)
        return True

    def _due(self, now: float, bucket: int) -> list[tuple[str, dict[int, int]]]:
        """Partners to sync now with the hits to flush for each; forgets idle partners."""
        batch = []
        for partner_id, state in list(self._partners.items()):
            # Hits from before the previous bucket can no longer count towards any estimate.
            for b in [b for b in state.pending if b < bucket - 1]:
                del state.pending[b]
            idle = now - state.last_seen
            if idle > IDLE_FORGET and not state.pending:
                del self._partners[partner_id]
            elif state.pending or (now - state.synced_at > STALE_VIEW and idle <= IDLE_FORGET):
                batch.append((partner_id, dict(state.pending)))
        return batch

    def _apply(
        self,
        partner_id: str,
        flush: dict[int, int],
        bucket: int,
        now: float,
        replies: Iterator[Any],
    ) -> None:
        totals: dict[int, int] = {}
        for b in flush:
            totals[b] = int(next(replies))  # INCRBY: the global total, ours included
            next(replies)  # EXPIRE
        for b in (bucket - 1, bucket):
            if b not in flush:
                totals[b] = int(next(replies) or 0)
        state = self._partners.get(partner_id)
        if state is None:
            return
        # Only what was flushed: more may have been admitted while the round trip ran.
        for b, n in flush.items():
            left = state.pending.get(b, 0) - n
            if left > 0:
                state.pending[b] = left
            else:
                state.pending.pop(b, None)
        state.bucket = bucket
        state.synced_prev, state.synced_curr = totals[bucket - 1], totals[bucket]
        state.synced_at = now
