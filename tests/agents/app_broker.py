"""The real broker inside the test's process: its FastAPI app, a real SQLite database, real Redis.

For tests that run many short scenarios (hypothesis examples): starting uvicorn for each
would take seconds, so the agent reaches the app through `AppTransport`, an httpx
transport onto starlette's TestClient.  Everything behind the transport is the broker's
own code: auth, the upload route, the mass-deletion guard, the encrypted cache.  Each
scenario registers a school of its own (`add_school`), so scenarios never share data.
The broker and the agent share one frozen clock, moved by the test, never by time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from broker.agenthub import held
from broker.app import create_app
from broker.clock import FrozenClock
from broker.db import make_engine, session_scope, upgrade
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import register_school
from broker.settings import BrokerSettings, Environment, Settings
from cache.errors import NotCachedError
from cache.service import CacheService
from cache.settings import CacheSettings
from consent.settings import ConsentSettings
from tests.agents.agent_broker import read_records
from tests.agents.agent_fakes import T0

# Headers the TestClient already acted on: the body it hands back is decoded and whole.
_SPENT = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class AppTransport(httpx.BaseTransport):
    """Sends the agent's requests to the app through a TestClient (the ASGI app, in process)."""

    def __init__(self, client: TestClient) -> None:
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self._client.request(
            request.method,
            request.url.raw_path.decode("ascii"),
            content=request.read(),
            headers=request.headers,
        )
        headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in _SPENT]
        return httpx.Response(answer.status_code, headers=headers, content=answer.content)


class SharedClock:
    """The agent's clock, reading the broker's: `sleep` (backoff) moves both, costing no time."""

    def __init__(self, clock: FrozenClock) -> None:
        self._clock = clock

    def __call__(self) -> datetime:
        return self._clock.now()

    def advance(self, seconds: float) -> None:
        self._clock.advance(timedelta(seconds=seconds))

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


@dataclass
class AppBroker:
    client: TestClient
    clock: FrozenClock
    _dfe: Iterator[int] = field(default_factory=lambda: count(3804100))

    @property
    def resources(self) -> Resources:
        resources: Resources = self.client.app.state.resources  # type: ignore[attr-defined]
        return resources

    def transport(self) -> AppTransport:
        return AppTransport(self.client)

    def agent_clock(self) -> SharedClock:
        return SharedClock(self.clock)

    def add_school(self, name: str = "Heaton Park Primary") -> tuple[str, str]:
        """A new school, as the operator registers one; (school_id, agent_key)."""
        with session_scope(self.resources.engine) as session:
            created = register_school(
                SchoolRepository(session),
                name=name,
                dfe_number=str(next(self._dfe)),
                urn=None,
                now=self.clock.now(),
            )
        return created.school.id, created.agent_key

    def confirm_deletion(self, school_id: str, area: str) -> dict[str, Any]:
        """An operator confirms the area's held deletion, as `misbroker agent confirm-deletion`."""
        with session_scope(self.resources.engine) as session:
            return held.confirm(
                session, school_id=school_id, area=area, actor="operator", now=self.clock.now()
            )

    def records(self, school_id: str, area: str) -> dict[str, dict[str, Any]]:
        """What the broker holds for the area, read through its own cache service."""
        service: CacheService = self.client.app.state.cache  # type: ignore[attr-defined]
        try:
            return read_records(service, self.resources.engine, school_id, area)
        except NotCachedError:
            return {}


@contextmanager
def app_broker(data_dir: Path, redis_url: str) -> Iterator[AppBroker]:
    """The broker app over a new SQLite database in `data_dir`, migrated to the newest."""
    settings = Settings(
        broker=BrokerSettings(data_dir=data_dir, environment=Environment.TEST, redis_url=redis_url),
        consent=ConsentSettings(),
        cache=CacheSettings(),
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    clock = FrozenClock(T0)
    with TestClient(create_app(settings, clock=clock)) as client:
        yield AppBroker(client, clock)
