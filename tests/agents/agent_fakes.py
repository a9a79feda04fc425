"""Test doubles for the agent's unit tests: a clock, and a fake broker behind MockTransport.

The fake broker stands in for "other people's servers" only in unit tests of the agent's
HTTP handling; the end-to-end and fault tests use the real broker.  It keeps the contract
the agent relies on: idempotent batch ids, 409 for older data and reused ids, full replaces.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from agents.config import AgentConfig, parse_config
from agents.mis.base import MisAdapter
from agents.runner import Agent
from agents.state import AgentState
from consent.areas import parse_instant

T0 = datetime(2025, 11, 19, 10, 0, tzinfo=UTC)  # a Wednesday in term, school hours
KEY = "agk_test_0123456789abcdef"


class Clock:
    """A settable clock; `sleep` moves it on, so backoff waits cost no real time."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@dataclass
class FakeBroker:
    """An in-memory broker speaking the agent API, with programmable failures."""

    areas: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    as_of: dict[str, datetime] = field(default_factory=dict)
    batches: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    # Each upload first takes the next scripted answer, if any: an int status or an exception.
    script: list[int | Exception] = field(default_factory=list)
    applied_then_lost: int = 0  # apply the next N uploads, then fail as if the reply was lost
    result_status: int = 200
    # Like the broker's `upload_max_bytes`: a larger inflated body is refused with 413.
    max_body_bytes: int | None = None
    limit_member: bool = True  # whether the 413 problem carries `limit_bytes`
    sizes: list[int] = field(default_factory=list)  # inflated size of every upload received
    # Apply this many more uploads, then die as the agent's process would (kill -9).
    crash_after_applied: int | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        path = request.url.path
        if path == "/v1/agent/uploads":
            return self._upload(request)
        if path == "/v1/agent/heartbeat":
            self.heartbeats.append(orjson.loads(request.content))
            commands, self.commands = self.commands, []
            return httpx.Response(200, json={"commands": commands, "server_time": T0.isoformat()})
        if path.startswith("/v1/agent/commands/"):
            self.results.append((path.split("/")[4], orjson.loads(request.content)))
            return httpx.Response(self.result_status, json={"id": path.split("/")[4]})
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(404, json={"title": "Not found"})

    def _upload(self, request: httpx.Request) -> httpx.Response:
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return problem(step, "scripted")
        assert request.headers["content-encoding"] == "gzip"
        raw = gzip.decompress(request.content)
        self.sizes.append(len(raw))
        if self.max_body_bytes is not None and len(raw) > self.max_body_bytes:
            extra = {"limit_bytes": self.max_body_bytes} if self.limit_member else {}
            return problem(413, "upload too large", "payload-too-large", **extra)
        body = orjson.loads(raw)
        self.uploads.append(body)
        digest = hashlib.sha256(raw).hexdigest()
        earlier = self.batches.get(body["batch_id"])
        if earlier is not None:
            if earlier[0] != digest:
                return problem(409, "batch_id reused with different content", "conflict")
            return httpx.Response(200, json=earlier[1])
        extracted_at = parse_instant(body["extracted_at"])
        assert extracted_at is not None
        area = body["area"]
        if area in self.as_of and extracted_at < self.as_of[area]:
            return problem(409, "older than cached", "stale-upload")
        answer = self._apply(area, body, extracted_at)
        self.batches[body["batch_id"]] = (digest, answer)
        if self.applied_then_lost:
            self.applied_then_lost -= 1
            raise httpx.ReadTimeout("reply lost", request=request)
        if self.crash_after_applied is not None:
            self.crash_after_applied -= 1
            if self.crash_after_applied <= 0:
                self.crash_after_applied = None
                raise Crash("the agent died before the reply arrived")
        return httpx.Response(200, json=answer)

    def _apply(self, area: str, body: dict[str, Any], at: datetime) -> dict[str, Any]:
        held = self.areas.setdefault(area, {})
        if body["mode"] == "full":
            held.clear()
        for record in body["records"]:
            held[record["id"]] = record
        for record_id in body["deleted"]:
            held.pop(record_id, None)
        self.as_of[area] = at
        return {
            "batch_id": body["batch_id"],
            "area": area,
            "applied": len(body["records"]),
            "deleted": len(body["deleted"]),
        }


class Crash(BaseException):
    """The agent's process dying mid-flush: nothing in the agent catches it."""


def problem(status: int, detail: str, slug: str = "invalid-input", **extra: Any) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "type": f"/problems/{slug}",
            "title": slug,
            "status": status,
            "detail": detail,
            **extra,
        },
        headers={"content-type": "application/problem+json"},
    )


def config_document(state_dir: Path, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "broker_url": "http://127.0.0.1:9",
        "agent_key": KEY,
        "state_dir": str(state_dir),
        "mis": {"adapter": "synthetic", "seed": 3, "pupils": 40, "phase": "primary"},
        "timezone": "Europe/London",
    }
    document.update(changes)
    return document


def make_config(tmp_path: Path, **changes: Any) -> AgentConfig:
    return parse_config(config_document(tmp_path / "state", **changes), tmp_path)


def make_agent(
    config: AgentConfig,
    adapter: MisAdapter,
    broker: FakeBroker,
    clock: Clock,
    state_factory: Callable[[Path], AgentState] = AgentState.open,
) -> Agent:
    return Agent(
        config,
        adapter,
        state_factory(config.state_dir),
        clock=clock,
        sleep=clock.sleep,
        transport=broker.transport(),
    )


def records_of(adapter: MisAdapter, area: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in adapter.extract(area)}
