"""Cached consent decisions, one cache per API process, invalidated through Redis pub/sub.

An entry holds a (partner, school) pair's folded timelines and, for the usual single
consent, a table of its one-area read decisions as they stand from the load until the next
change, so a hit is two dict lookups; anything else asks the engine.  It is dropped when:
- a change is published on `CHANNEL` (every process hears it within milliseconds);
- the decision time reaches the next instant any of its decisions may change
  (`valid_until`), so an entry never outlives a consent's end or grace window;
- it is older than `max_age` by the process's monotonic clock: a backstop for a lost
  message.  While the listener is not subscribed the backstop is `degraded_max_age`
  (1 s), so a Redis outage costs reloads, never a stale "allowed" for longer than that.

Every (re)subscription clears the cache: messages sent while we were not listening are
lost, so nothing loaded before can be trusted.  The cache is a subscriber of the process's
one listener (`broker.invalidation.InvalidationListener`) on `CHANNEL`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final, TypeAlias

import redis

from consent.areas import CATALOGUE
from consent.engine import ConsentTimeline, Decision, Operation, decide, valid_until

log = logging.getLogger(__name__)

CHANNEL: Final = "mb:consent:invalidate"
EVERYTHING: Final = "*"
_NEVER: Final = datetime.max.replace(tzinfo=UTC)

Loader: TypeAlias = Callable[[str, str], Sequence[ConsentTimeline]]  # (partner_id, school_id)
Key: TypeAlias = tuple[str, str]


class _Entry:
    """A pair's timelines, plus (one consent, the usual case) its one-area read decisions
    for [valid_from, expires_at) in a plain dict: a hit is then two lookups, not a fold walk.
    """

    __slots__ = ("current", "deadline", "expires_at", "timelines", "valid_from")

    def __init__(
        self,
        timelines: tuple[ConsentTimeline, ...],
        valid_from: datetime,
        expires_at: datetime,
        deadline: float,
    ) -> None:
        self.timelines = timelines
        self.valid_from = valid_from
        self.expires_at = expires_at
        self.deadline = deadline
        self.current: dict[str, Decision] | None = None
        if len(timelines) == 1:
            only = timelines[0]
            self.current = {area: only.decision(area, valid_from) for area in only.allowed}


class DecisionCache:
    def __init__(
        self,
        loader: Loader,
        *,
        max_age: float = 300.0,
        degraded_max_age: float = 1.0,
        max_entries: int = 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._max_age = max_age
        self._degraded_max_age = degraded_max_age
        self._age = degraded_max_age  # until a listener has subscribed
        self._connected = False
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[Key, _Entry] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self.loads = 0
        # Caches that hang off a pair's decisions (the partner's admitted pupils): dropped
        # with them, `(school_id, partner_id)`, None for "every".
        self._on_drop: list[Callable[[str | None, str | None], None]] = []

    def on_drop(self, callback: Callable[[str | None, str | None], None]) -> None:
        self._on_drop.append(callback)

    def _dropped(self, school_id: str | None, partner_id: str | None) -> None:
        for callback in self._on_drop:
            callback(school_id, partner_id)

    @property
    def connected(self) -> bool:
        return self._connected

    def __len__(self) -> int:
        return len(self._entries)

    def decide_cached(
        self,
        partner_id: str,
        school_id: str,
        areas: str | Iterable[str],
        at: datetime,
        operation: Operation = "read",
    ) -> Decision:
        """May the partner do `operation` on `areas` of the school at `at`? The hot path."""
        entry = self._valid(partner_id, school_id, at) or self._load(partner_id, school_id, at)
        if type(areas) is list and len(areas) == 1:  # the read path's `[area]`
            areas = areas[0]
        current = entry.current  # `_answer`'s usual case, inlined: it is most calls
        if current is not None and type(areas) is str and operation == "read":
            found = current.get(areas)
            if found is not None and at >= entry.valid_from:
                return found
        return _answer(entry, areas, at, operation)

    def peek(self, partner_id: str, school_id: str, area: str, at: datetime) -> Decision | None:
        """The one-area read decision if it can be answered from memory now, else None.

        Never loads: for a caller that must not block (it asks `decide` when this is None).
        """
        if self._valid(partner_id, school_id, at) is None:
            return None
        return self.decide_cached(partner_id, school_id, area, at)

    async def decide(
        self,
        partner_id: str,
        school_id: str,
        areas: str | Iterable[str],
        at: datetime,
        operation: Operation = "read",
    ) -> Decision:
        """`decide_cached` for async code: a miss loads in a thread, not on the event loop."""
        if self._valid(partner_id, school_id, at) is None:
            await asyncio.to_thread(self._load, partner_id, school_id, at)
        return self.decide_cached(partner_id, school_id, areas, at, operation)

    def _valid(self, partner_id: str, school_id: str, at: datetime) -> _Entry | None:
        """The pair's entry if it may answer for `at` now: not past its decisions' next
        change, nor its age."""
        entry = self._entries.get((partner_id, school_id))
        if entry is None or at >= entry.expires_at or self._monotonic() >= entry.deadline:
            return None
        return entry

    def invalidate(self, school_id: str, partner_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._entries.pop((partner_id, school_id), None)
        self._dropped(school_id, partner_id)

    def invalidate_school(self, school_id: str) -> None:
        with self._lock:
            self._generation += 1
            for key in [k for k in self._entries if k[1] == school_id]:
                del self._entries[key]
        self._dropped(school_id, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
        self._dropped(None, None)

    def set_connected(self, connected: bool) -> None:
        """Listening (long backstop) or not (short); either way, nothing before is trusted."""
        with self._lock:
            self._connected = connected
            self._age = self._max_age if connected else self._degraded_max_age
            self._generation += 1
            self._entries.clear()
        self._dropped(None, None)

    def apply(self, message: str) -> None:
        """Apply one invalidation message: "school:partner", "school:*" or "*"."""
        if message == EVERYTHING:
            self.clear()
            return
        school_id, sep, partner_id = message.partition(":")
        if not sep or not school_id or not partner_id:
            log.warning("ignoring malformed invalidation %r", message[:200])
            self.clear()  # unreadable: assume the worst
        elif partner_id == EVERYTHING:
            self.invalidate_school(school_id)
        else:
            self.invalidate(school_id, partner_id)

    def _load(self, partner_id: str, school_id: str, at: datetime) -> _Entry:
        generation = self._generation
        started = self._monotonic()
        timelines = tuple(self._loader(partner_id, school_id))
        self.loads += 1
        ends = [valid_until(t, at) for t in timelines]
        expires_at = min((e for e in ends if e is not None), default=_NEVER)
        entry = _Entry(timelines, at, expires_at, started + self._age)
        with self._lock:
            # An invalidation while we were loading may describe a change we did not see.
            if generation == self._generation:
                if len(self._entries) >= self._max_entries:
                    self._evict()
                self._entries[(partner_id, school_id)] = entry
        return entry

    def _evict(self) -> None:
        """Drop the oldest tenth (dicts keep insertion order): cheap and good enough."""
        for key in list(self._entries)[: max(1, self._max_entries // 10)]:
            del self._entries[key]


def _answer(
    entry: _Entry, areas: str | Iterable[str], at: datetime, operation: Operation
) -> Decision:
    """What `decide` would say, from the precomputed table when it applies."""
    current = entry.current
    if current is None or operation != "read" or at < entry.valid_from:
        return decide(entry.timelines, areas, at, operation)
    if isinstance(areas, str):
        name = areas
    elif isinstance(areas, list | tuple) and len(areas) == 1:
        name = areas[0]
    else:
        return decide(entry.timelines, areas, at, operation)
    found = current.get(name)
    if found is None:
        found = decide(entry.timelines, name, at, operation)
        if name in CATALOGUE:  # a refusal, constant until expires_at: keep it (never junk)
            current[name] = found
    return found


def invalidation_message(school_id: str, partner_id: str) -> str:
    return f"{school_id}:{partner_id}"


def publish_invalidations(client: redis.Redis, pairs: Iterable[tuple[str, str]]) -> None:
    """Tell every API process that these (school, partner) decisions changed."""
    messages = sorted({invalidation_message(s, p) for s, p in pairs})
    if not messages:
        return
    with client.pipeline(transaction=False) as pipe:
        for message in messages:
            pipe.publish(CHANNEL, message)
        pipe.execute()
