"""Partner tokens held in process: served without Redis, dropped on revocation or expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis
import redis.asyncio as aredis

from broker.invalidation import InvalidationListener
from broker.partners.tokens import (
    EVERY_PARTNER,
    REVOCATION_CHANNEL,
    PartnerPrincipal,
    TokenCache,
    issue_token,
    revoke_partner_tokens,
)
from broker.security import digest_secret
from tests.conftest import T0
from tests.support.monotonic import FakeMonotonic

ALICE = PartnerPrincipal("prt_alice", "cli_alice", 120)
BOB = PartnerPrincipal("prt_bob", "cli_bob", 600)


@pytest.fixture
def tick() -> FakeMonotonic:
    return FakeMonotonic(500.0)


@asynccontextmanager
async def async_redis(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def token_key(raw: redis.Redis, token: str) -> str:
    """The token's Redis key; asserting it exists keeps the tests honest about the format."""
    key = f"mb:pt:{digest_secret(token)}"
    assert raw.exists(key), "token keys are not where these tests look for them"
    return key


def subscribed_cache(tick: FakeMonotonic, max_age: float = 60) -> TokenCache:
    cache = TokenCache(max_age=max_age, degraded_max_age=1, monotonic=tick)
    cache.set_connected(True)
    return cache


async def test_a_resolved_token_is_served_without_redis_until_max_age(
    redis_url: str, redis_client: redis.Redis, tick: FakeMonotonic
) -> None:
    cache = subscribed_cache(tick, max_age=60)
    async with async_redis(redis_url) as client:
        issued = await issue_token(client, ALICE, T0)
        assert await cache.resolve(client, issued.access_token) == ALICE
        redis_client.delete(token_key(redis_client, issued.access_token))  # behind its back
        tick.advance(59.999)
        assert await cache.resolve(client, issued.access_token) == ALICE
        tick.advance(0.001)
        assert await cache.resolve(client, issued.access_token) is None
        assert len(cache) == 0


async def test_until_subscribed_a_token_is_held_for_the_degraded_age_only(
    redis_url: str, redis_client: redis.Redis, tick: FakeMonotonic
) -> None:
    cache = TokenCache(max_age=60, degraded_max_age=1, monotonic=tick)
    async with async_redis(redis_url) as client:
        issued = await issue_token(client, ALICE, T0)
        assert await cache.resolve(client, issued.access_token) == ALICE
        redis_client.delete(token_key(redis_client, issued.access_token))
        tick.advance(0.999)
        assert await cache.resolve(client, issued.access_token) == ALICE
        tick.advance(0.001)
        assert await cache.resolve(client, issued.access_token) is None


async def test_a_token_is_never_held_past_its_redis_ttl(
    redis_url: str, redis_client: redis.Redis, tick: FakeMonotonic
) -> None:
    cache = subscribed_cache(tick, max_age=60)
    async with async_redis(redis_url) as client:
        issued = await issue_token(client, ALICE, T0, ttl=5)
        assert await cache.resolve(client, issued.access_token) == ALICE
        redis_client.delete(token_key(redis_client, issued.access_token))
        tick.advance(4.9)
        assert await cache.resolve(client, issued.access_token) == ALICE
        tick.advance(0.1)  # the token has expired in Redis by now: so here
        assert await cache.resolve(client, issued.access_token) is None


async def test_unknown_tokens_are_not_remembered(
    redis_url: str, redis_client: redis.Redis, tick: FakeMonotonic
) -> None:
    cache = subscribed_cache(tick)
    async with async_redis(redis_url) as client:
        issued = await issue_token(client, ALICE, T0)
        key = token_key(redis_client, issued.access_token)
        stored = redis_client.dump(key)
        assert stored is not None
        redis_client.delete(key)
        assert await cache.resolve(client, issued.access_token) is None
        assert await cache.resolve(client, "mbt_never-issued") is None
        assert len(cache) == 0
        # Issued by another process a moment later (here: put back): it works at once.
        redis_client.restore(key, 60_000, stored)
        assert await cache.resolve(client, issued.access_token) == ALICE


async def test_apply_drops_one_partners_tokens_or_everyones(
    redis_url: str, redis_client: redis.Redis, tick: FakeMonotonic
) -> None:
    cache = subscribed_cache(tick)
    async with async_redis(redis_url) as client:
        alice = (await issue_token(client, ALICE, T0)).access_token
        bob = (await issue_token(client, BOB, T0)).access_token
        for token in (alice, bob):
            await cache.resolve(client, token)
            redis_client.delete(token_key(redis_client, token))
        cache.apply(ALICE.partner_id)
        assert await cache.resolve(client, alice) is None
        assert await cache.resolve(client, bob) == BOB
        cache.apply(EVERY_PARTNER)
        assert await cache.resolve(client, bob) is None


@pytest.mark.parametrize("connected", [True, False])
async def test_a_connection_change_drops_every_token(
    redis_url: str, redis_client: redis.Redis, tick: FakeMonotonic, connected: bool
) -> None:
    cache = subscribed_cache(tick)
    async with async_redis(redis_url) as client:
        token = (await issue_token(client, ALICE, T0)).access_token
        await cache.resolve(client, token)
        redis_client.delete(token_key(redis_client, token))
        cache.set_connected(connected)
        assert len(cache) == 0
        assert await cache.resolve(client, token) is None


async def test_a_revocation_heard_during_the_lookup_is_not_kept(
    redis_url: str, redis_client: redis.Redis, tick: FakeMonotonic
) -> None:
    cache = subscribed_cache(tick)
    async with async_redis(redis_url) as client:
        token = (await issue_token(client, ALICE, T0)).access_token
        await client.ping()  # connected already: the lookup below is one round trip
        lookup = asyncio.create_task(cache.resolve(client, token))
        await asyncio.sleep(0)  # the lookup is sent, its answer not read yet
        assert not lookup.done()
        cache.apply(ALICE.partner_id)
        assert await lookup == ALICE  # found before the revocation: this one request passes
        assert len(cache) == 0
        redis_client.delete(token_key(redis_client, token))
        assert await cache.resolve(client, token) is None


async def test_a_revocation_from_another_process_is_enforced_within_a_second(
    redis_url: str, redis_client: redis.Redis
) -> None:
    cache = TokenCache(max_age=60)  # the real clock: only the message can drop the token
    listener = InvalidationListener(
        {REVOCATION_CHANNEL: cache}, redis_url, ping_interval=0.2, retry_delay=0.05
    )
    await listener.start()
    try:
        await asyncio.wait_for(listener.subscribed.wait(), 5)
        async with async_redis(redis_url) as client, async_redis(redis_url) as admin:
            alice = (await issue_token(client, ALICE, T0)).access_token
            bob = (await issue_token(client, BOB, T0)).access_token
            assert await cache.resolve(client, alice) == ALICE
            assert await cache.resolve(client, bob) == BOB
            redis_client.delete(token_key(redis_client, bob))  # held: still served from here
            assert await revoke_partner_tokens(admin, ALICE.partner_id) == 1
            started = time.monotonic()
            while await cache.resolve(client, alice) is not None:
                assert time.monotonic() - started < 1.0, "a revoked token still resolves"
                await asyncio.sleep(0.005)
            assert await cache.resolve(client, bob) == BOB  # another partner's: untouched
            assert len(cache) == 1
    finally:
        await listener.stop()
    assert len(cache) == 0  # stopped: nothing loaded before is trusted
