"""Partner tokens as security state: minting is limited, live tokens capped, never evicted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from broker.app import create_app
from broker.cli.up import Supervisor
from broker.clock import FrozenClock
from broker.db import upgrade
from broker.partners.tokens import EVERY_PARTNER, MAX_LIVE_TOKENS, TokenCache
from broker.resources import Resources
from broker.settings import Settings
from tests.conftest import make_settings
from tests.support.partners import exampro_credentials


def _partner(client: TestClient, now_clock: FrozenClock) -> tuple[str, str]:
    resources: Resources = client.app.state.resources  # type: ignore[attr-defined]
    upgrade(resources.engine)
    return exampro_credentials(resources, now_clock.now())


def _mint(client: TestClient, credentials: tuple[str, str]) -> tuple[int, dict[str, str]]:
    response = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=credentials
    )
    return response.status_code, response.json() | dict(response.headers)


def _reads(client: TestClient, token: str) -> int:
    response = client.get("/v1/schools", headers={"Authorization": f"Bearer {token}"})
    return int(response.status_code)


def test_minting_is_rate_limited_per_client(client: TestClient, clock: FrozenClock) -> None:
    credentials = _partner(client, clock)
    for _ in range(30):
        assert _mint(client, credentials)[0] == 200
    status, body = _mint(client, credentials)
    assert status == 429
    assert body["error"] == "slow_down"
    assert 1 <= int(body["retry-after"]) <= 60
    clock.advance(timedelta(minutes=1))
    assert _mint(client, credentials)[0] == 200


def test_live_tokens_are_capped_per_client_oldest_first(
    client: TestClient, clock: FrozenClock, redis_client: redis.Redis
) -> None:
    credentials = _partner(client, clock)
    tokens = []
    for _ in range(MAX_LIVE_TOKENS + 2):
        status, body = _mint(client, credentials)
        assert status == 200
        tokens.append(body["access_token"])
    assert [_reads(client, t) for t in tokens] == [401, 401] + [200] * MAX_LIVE_TOKENS
    assert len(redis_client.keys("mb:pt:*")) == MAX_LIVE_TOKENS


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Settings]:
    """The embedded deployment's two Redis servers, the cache one with a tiny memory."""
    settings = make_settings(tmp_path / "d", embedded_redis_maxmemory="2mb")
    supervisor = Supervisor(settings, "127.0.0.1", 1)
    try:
        supervisor.prepare()
        yield settings
    finally:
        supervisor.shutdown()


def test_filling_the_cache_redis_never_signs_a_partner_out(
    embedded: Settings, clock: FrozenClock
) -> None:
    assert embedded.state_redis_url != embedded.redis_url
    with TestClient(create_app(embedded, clock=clock)) as client:
        credentials = _partner(client, clock)
        status, body = _mint(client, credentials)
        assert status == 200
        token = body["access_token"]
        cache = redis.Redis.from_url(embedded.redis_url)
        try:
            filler = b"x" * 4096
            n = 0
            while int(cache.info("stats")["evicted_keys"]) == 0:
                cache.set(f"filler:{n}", filler, ex=3600)  # as the hot cache writes
                n += 1
                assert n < 100_000, "the cache Redis never evicted anything"
            assert cache.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        finally:
            cache.close()
        state = redis.Redis.from_url(embedded.state_redis_url)
        try:
            assert state.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        finally:
            state.close()
        tokens: TokenCache = client.app.state.token_cache  # type: ignore[attr-defined]
        tokens.apply(EVERY_PARTNER)  # read from Redis, not from this process's memory
        assert _reads(client, token) == 200
