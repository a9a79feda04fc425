"""Beat locks: one run per job and schedule slot, however many beats or workers try."""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta

import redis

from cache import tasks
from cache.key_store import SqlDataKeyStore
from cache.keys import KeyRing, LocalKeyProvider
from tests.conftest import T0


def test_two_concurrent_acquirers_in_one_slot_get_exactly_one_lock(redis_url: str) -> None:
    contenders = 8
    barrier = threading.Barrier(contenders)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def beat() -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            barrier.wait()
            with (
                tasks.beat_lock(client, "cache.race", slot_seconds=60, now=T0) as acquired,
                lock,
            ):
                outcomes.append(acquired)
        finally:
            client.close()

    threads = [threading.Thread(target=beat) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * (contenders - 1) + [True]


def test_each_slot_has_its_own_lock(redis_client: redis.Redis) -> None:
    slot = 3600
    start = T0.replace(minute=0)
    with tasks.beat_lock(redis_client, "cache.slots", slot_seconds=slot, now=start) as first:
        assert first
    late_in_slot = start + timedelta(seconds=slot - 1)
    with tasks.beat_lock(redis_client, "cache.slots", slot_seconds=slot, now=late_in_slot) as same:
        assert not same
    next_slot = start + timedelta(seconds=slot)
    with tasks.beat_lock(redis_client, "cache.slots", slot_seconds=slot, now=next_slot) as nxt:
        assert nxt
    assert tasks.lock_key("cache.slots", slot, start) != tasks.lock_key(
        "cache.slots", slot, next_slot
    )


def test_the_beat_schedule_names_every_job() -> None:
    assert set(tasks.BEAT_SCHEDULE) == {
        "cache.purge_expired",
        "cache.refresh_stale",
        "cache.demote_idle",
        "cache.shred_closed_schools",
        "cache.rewrap_keys",
    }
    assert tasks.TASK_OPTIONS["acks_late"] is True
    assert all(period > 0 for period in tasks.BEAT_SCHEDULE.values())


def test_two_beats_never_purge_twice_in_one_slot(deps: tasks.CacheDeps) -> None:
    assert tasks.purge_expired(deps) is not None
    assert tasks.purge_expired(deps) is None


def test_rewrap_keys_moves_every_data_key_to_the_new_kek(
    deps: tasks.CacheDeps, key_store: SqlDataKeyStore
) -> None:
    k1, k2 = secrets.token_bytes(32), secrets.token_bytes(32)
    before = KeyRing(LocalKeyProvider({"k1": k1}, "k1"), key_store)
    version, data_key = before.encryption_key("sch_0001")
    before.encryption_key("sch_0002")
    deps.keyring = KeyRing(LocalKeyProvider({"k1": k1, "k2": k2}, "k2"), key_store)
    assert tasks.rewrap_keys(deps, "k2") == 2
    assert key_store.wrapped_by_other_kek("k2", limit=10) == []
    retired_k1 = KeyRing(LocalKeyProvider({"k2": k2}, "k2"), key_store)
    assert retired_k1.decryption_key("sch_0001", version) == data_key
