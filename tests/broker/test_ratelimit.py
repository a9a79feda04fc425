"""Partner rate limits: admitted in-process, shared through a real Redis, on a fake wall clock."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from hypothesis import given
from hypothesis import strategies as st

from broker.embedded_redis import EmbeddedRedis
from broker.errors import TooManyRequestsError
from broker.partners.ratelimit import PartnerRateLimiter, admits, retry_after
from tests.support.servers import free_port

BUCKET = 30_000_000  # an epoch minute: the fake wall starts at its first second
T0 = BUCKET * 60.0


class FakeWall:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, bucket_offset: int, elapsed: float) -> None:
        self.now = T0 + 60 * bucket_offset + elapsed


MakeLimiter = Callable[..., PartnerRateLimiter]


@pytest.fixture
def wall() -> FakeWall:
    return FakeWall()


@pytest_asyncio.fixture(loop_scope="function")
async def make_limiter(
    redis_url: str, redis_client: redis.Redis, wall: FakeWall
) -> AsyncIterator[MakeLimiter]:
    """Limiters ("processes") on the session's Redis, emptied first; stopped after the test."""
    made: list[PartnerRateLimiter] = []

    def make(url: str = redis_url, **kwargs: object) -> PartnerRateLimiter:
        limiter = PartnerRateLimiter(url, wall=wall, **kwargs)  # type: ignore[arg-type]
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.stop()


def refused(limiter: PartnerRateLimiter, partner: str, limit: int) -> int:
    """The Retry-After of a request that must be refused."""
    with pytest.raises(TooManyRequestsError) as caught:
        limiter.hit(partner, limit)
    assert caught.value.status == 429
    assert caught.value.extra == {"limit_per_minute": limit}
    return int(caught.value.headers["Retry-After"])


def stored(client: redis.Redis, partner: str, bucket_offset: int) -> int:
    value = client.get(f"mb:rl:{partner}:{BUCKET + bucket_offset}")
    return int(value) if value is not None else 0


# The pure window arithmetic.


@pytest.mark.parametrize(
    ("prev", "curr", "limit", "elapsed", "seconds"),
    [
        (0, 3, 3, 10.0, 70),  # prev=0, curr at the limit: 60 - 10, then 60/3 into the next
        (0, 5, 3, 0.0, 96),  # over the limit (other processes): 60 + 60 * (1 - 2/5)
        (10, 0, 10, 0.0, 6),  # only prev, at full weight: it must decay by one request
        (10, 1, 10, 6.0, 6),  # prev weighs 9 at 6 s, curr takes the last slot: 12 s
        (10, 9, 10, 30.0, 30),  # curr fills the room: wait for the bucket to turn over
        (1, 0, 1, 0.0, 60),  # limit 1: the previous bucket's hit must have fully decayed
        (0, 1, 1, 0.0, 120),  # limit 1: this bucket's hit weighs 1 until the next one ends
        (0, 1, 1, 59.5, 61),  # rounded up, never down
        (7, 0, 7, 0.0, 9),  # 60/7 = 8.57 s
        (10**9, 10**9, 10**9, 59.0, 2),  # huge limit, at it: 1 s to the next bucket + 60/1e9
        (0, 0, 0, 12.0, 108),  # a zero limit never admits: say two windows from the start
        (0, 0, 5, 30.0, 1),  # nothing counted: never less than one second
    ],
)
def test_retry_after_closed_form(
    prev: int, curr: int, limit: int, elapsed: float, seconds: int
) -> None:
    assert retry_after(prev, curr, limit, elapsed) == seconds


def test_admission_is_strict_after_counting() -> None:
    assert admits(0, 2, 3, 0.0)
    assert not admits(0, 3, 3, 0.0)
    assert not admits(10, 0, 10, 5.0)  # 10 * 55/60 = 9.17, plus one is over 10
    assert admits(10, 0, 10, 6.0)  # 9 exactly, plus one is 10
    assert admits(10**12, 0, 10**12, 60 * 1e-12 * 2)  # a huge limit fits one more soon
    assert not admits(0, 0, 0, 30.0)


def estimate_admits(prev: int, curr: int, limit: int, at: float) -> bool:
    """Admission `at` seconds after the current bucket started, with no new hits."""
    if at < 60:
        return admits(prev, curr, limit, at)
    if at < 120:
        return admits(curr, 0, limit, at - 60)
    return admits(0, 0, limit, at - 120)


@given(
    prev=st.integers(0, 10**6),
    curr=st.integers(0, 10**6),
    limit=st.integers(1, 10**6),
    quarter_seconds=st.integers(0, 239),
)
def test_retry_after_is_the_first_whole_second_that_admits(
    prev: int, curr: int, limit: int, quarter_seconds: int
) -> None:
    elapsed = quarter_seconds / 4
    if admits(prev, curr, limit, elapsed):
        return
    seconds = retry_after(prev, curr, limit, elapsed)
    assert 1 <= seconds <= 120
    assert estimate_admits(prev, curr, limit, elapsed + seconds)
    assert not estimate_admits(prev, curr, limit, elapsed + seconds - 1)


# One process.


async def test_exact_limit_in_one_process(make_limiter: MakeLimiter, wall: FakeWall) -> None:
    limiter = make_limiter()
    wall.at(0, 10)
    for _ in range(3):
        limiter.hit("p1", 3)
    assert refused(limiter, "p1", 3) == retry_after(0, 3, 3, 10) == 70
    wall.at(0, 40)
    assert refused(limiter, "p1", 3) == 40  # the same moment, nearer
    limiter.hit("p2", 3)  # partners are counted apart
    wall.at(1, 20)
    limiter.hit("p1", 3)  # 3 * 40/60 = 2, room for one
    assert refused(limiter, "p1", 3) == retry_after(3, 1, 3, 20) == 20


async def test_the_window_slides_across_a_bucket_boundary(
    make_limiter: MakeLimiter, redis_client: redis.Redis, wall: FakeWall
) -> None:
    limiter = make_limiter()
    wall.at(0, 30)
    for _ in range(10):
        limiter.hit("p", 10)
    assert await limiter.sync_now()
    wall.at(1, 0)
    assert refused(limiter, "p", 10) == 6  # prev weighs all 10 at the turn of the minute
    wall.at(1, 5.9)
    refused(limiter, "p", 10)
    wall.at(1, 6)
    limiter.hit("p", 10)  # prev weighs 9
    assert refused(limiter, "p", 10) == 6  # and that last slot went to curr
    assert await limiter.sync_now()
    assert (stored(redis_client, "p", 0), stored(redis_client, "p", 1)) == (10, 1)
    wall.at(1, 12)
    limiter.hit("p", 10)
    wall.at(2, 59)  # two buckets on: the ten have left the window
    for _ in range(9):  # prev is the 2 of bucket 1 at 1/60 weight
        limiter.hit("p", 10)
    assert refused(limiter, "p", 10) == 1


async def test_hits_pending_from_the_previous_bucket_go_to_its_key(
    make_limiter: MakeLimiter, redis_client: redis.Redis, wall: FakeWall
) -> None:
    limiter = make_limiter()
    wall.at(0, 59)
    for _ in range(4):
        limiter.hit("p", 5)
    wall.at(1, 1)  # the minute turned over before the sync
    limiter.hit("p", 5)  # 4 * 59/60 + 0 = 3.93: one more fits
    refused(limiter, "p", 5)
    assert await limiter.sync_now()
    assert (stored(redis_client, "p", 0), stored(redis_client, "p", 1)) == (4, 1)
    refused(limiter, "p", 5)  # the view from Redis agrees with the local one


# Several processes.


async def test_two_processes_share_their_counts(
    make_limiter: MakeLimiter, redis_client: redis.Redis, wall: FakeWall
) -> None:
    a, b = make_limiter(), make_limiter()
    wall.at(0, 10)
    for _ in range(6):
        a.hit("p", 10)
    for _ in range(4):
        b.hit("p", 10)
    assert await a.sync_now()
    assert await b.sync_now()  # b flushes its 4 and reads a's 6
    refused(b, "p", 10)
    a.hit("p", 10)  # a read only its own 6: one more is the overshoot the design allows
    wall.at(0, 11.5)
    assert await a.sync_now()
    assert await b.sync_now()  # nothing pending, but its view is over a second old: re-read
    refused(a, "p", 10)
    refused(b, "p", 10)
    assert stored(redis_client, "p", 0) == 11


async def test_every_key_written_expires(
    make_limiter: MakeLimiter, redis_client: redis.Redis, wall: FakeWall
) -> None:
    limiter = make_limiter()
    wall.at(0, 59)
    for partner in ("a", "b", "c"):
        limiter.hit(partner, 10)
    wall.at(1, 0)
    limiter.hit("a", 10)
    assert await limiter.sync_now()
    keys = sorted(redis_client.keys("mb:rl:*"))
    assert keys == [
        f"mb:rl:{partner}:{BUCKET + offset}".encode()
        for partner, offset in [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    ]
    ttls = [redis_client.ttl(key) for key in keys]
    assert all(0 < ttl <= 120 for ttl in ttls), ttls


async def test_idle_partners_are_forgotten(make_limiter: MakeLimiter, wall: FakeWall) -> None:
    limiter = make_limiter()
    limiter.hit("quiet", 1)
    limiter.hit("busy", 100)
    assert await limiter.sync_now()
    wall.at(2, 0.5)  # 120.5 s since the quiet partner's only hit
    limiter.hit("busy", 100)
    assert await limiter.sync_now()
    assert set(limiter._partners) == {"busy"}
    limiter.hit("quiet", 1)  # back, and its old hit has left the window


# Redis unreachable, down, hanging.


async def test_pending_hits_survive_an_outage_and_are_flushed_after_it(
    tmp_path: Path, wall: FakeWall, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path / "run", tmp_path / "store", tmp_path / "rl.sock", "16mb")
    server.start()
    limiter = PartnerRateLimiter(server.url, wall=wall)
    try:
        for _ in range(2):
            limiter.hit("p", 10)
        assert await limiter.sync_now()
        server.stop()
        for _ in range(3):
            limiter.hit("p", 10)
        with caplog.at_level(logging.INFO, logger="broker.partners.ratelimit"):
            assert not await limiter.sync_now()
            assert not await limiter.sync_now()
            for _ in range(5):  # admitting goes on, on the local counts: 2 synced + 8 pending
                limiter.hit("p", 10)
            refused(limiter, "p", 10)
            server.start()
            assert await limiter.sync_now()
        ours = [r.levelname for r in caplog.records if r.name == "broker.partners.ratelimit"]
        assert ours == ["WARNING", "INFO"]  # once per outage
        client = redis.Redis.from_url(server.url)
        try:
            assert int(client.get(f"mb:rl:p:{BUCKET}")) == 10  # type: ignore[arg-type]
        finally:
            client.close()
        refused(limiter, "p", 10)
    finally:
        await limiter.stop()
        server.stop()


async def test_an_unreachable_redis_is_logged_without_its_password(
    wall: FakeWall, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = PartnerRateLimiter(f"redis://broker:s3cret@127.0.0.1:{free_port()}/0", wall=wall)
    limiter.hit("p", 1)
    with caplog.at_level(logging.WARNING, logger="broker.partners.ratelimit"):
        assert not await limiter.sync_now()
        await limiter.stop()
    assert caplog.records
    assert "s3cret" not in caplog.text
    assert "not flushed" in caplog.records[-1].getMessage()


async def test_stop_is_bounded_when_redis_never_answers(tmp_path: Path, wall: FakeWall) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the commands and never replies

    path = tmp_path / "silent.sock"
    server = await asyncio.start_unix_server(silent, path=str(path))
    limiter = PartnerRateLimiter(f"unix://{path}", sync_interval=0.01, wall=wall)
    await limiter.start()
    limiter.hit("p", 5)
    started = time.monotonic()
    await limiter.stop()
    assert time.monotonic() - started < 3.5
    server.close()
    await server.wait_closed()
    limiter.hit("p", 5)  # the hit is still counted locally
    assert limiter._partners["p"].pending == {BUCKET: 2}


# The background task.


async def test_the_background_task_syncs_and_stop_flushes(
    make_limiter: MakeLimiter, redis_client: redis.Redis
) -> None:
    syncing = make_limiter(sync_interval=0.01)
    await syncing.start()
    syncing.hit("p", 10)
    for _ in range(500):  # waits for the task, at most 5 s
        if stored(redis_client, "p", 0) == 1:
            break
        await asyncio.sleep(0.01)
    assert stored(redis_client, "p", 0) == 1
    await syncing.stop()

    idle = make_limiter(sync_interval=3600)  # its loop will not sync before stop
    await idle.start()
    for _ in range(4):
        idle.hit("q", 10)
    assert stored(redis_client, "q", 0) == 0
    await idle.stop()
    assert stored(redis_client, "q", 0) == 4
    assert redis_client.ttl(f"mb:rl:q:{BUCKET}") > 0
