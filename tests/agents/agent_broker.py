"""A real broker for the agent's end-to-end tests: uvicorn in a subprocess, SQLite in a temp dir.

The school is registered with the operator CLI (`misbroker school add --json`), exactly as
an operator would, and what the broker holds is read back through `cache.service`.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from sqlmodel import col

from broker.agenthub.commands import queue_command
from broker.agenthub.models import AgentCommand, CommandKind, UploadBatch
from broker.db import session_scope
from broker.resources import Resources
from broker.settings import BrokerSettings, Environment, Settings
from cache.key_store import SqlDataKeyStore
from cache.keys import KeyRing
from cache.service import CacheService
from cache.settings import CacheSettings
from consent.settings import ConsentSettings
from tests.support.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


def broker_env(
    data_dir: Path, redis_url: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}
    env.update(
        MISBROKER_DATA_DIR=str(data_dir),
        MISBROKER_REDIS_URL=redis_url,
        MISBROKER_ENVIRONMENT="test",
        MISBROKER_LOG_LEVEL="WARNING",
    )
    env.update(extra or {})
    return env


def add_school(data_dir: Path, redis_url: str, name: str, dfe_number: str) -> tuple[str, str]:
    """Register a school through the operator CLI; (school_id, agent_key)."""
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "--data-dir", str(data_dir), "school", "add",
         "--name", name, "--dfe-number", dfe_number, "--json"],
        cwd=ROOT, env=broker_env(data_dir, redis_url), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = orjson.loads(done.stdout)
    return str(out["school_id"]), str(out["agent_key"])


@dataclass
class LiveBroker:
    data_dir: Path
    redis_url: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # more settings, e.g. upload limits

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_file is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The certificate it serves TLS with (self-signed: its own CA), if it does."""
        cert = self.env.get("MISBROKER_TLS_CERT_FILE")
        return Path(cert) if cert else None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return True if self.ca_file is None else ssl.create_default_context(cafile=self.ca_file)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "api.log"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "broker.serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                cwd=ROOT, env=broker_env(self.data_dir, self.redis_url, self.env), stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        if not wait_until(self.healthy, timeout=60, interval=0.1):
            self.stop()
            raise RuntimeError(f"broker did not start: {self.log_tail()}")

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"broker exited: {self.log_tail()}")
        try:
            return (
                httpx.get(self.url + "/healthz", timeout=1, verify=self.verify).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def settings(self) -> Settings:
        return Settings(
            broker=BrokerSettings(
                data_dir=self.data_dir,
                environment=Environment.TEST,
                redis_url=self.redis_url,
            ),
            consent=ConsentSettings(),
            cache=CacheSettings(),
        )


@contextmanager
def live_broker(data_dir: Path, redis_url: str, **env: str) -> Iterator[LiveBroker]:
    broker = LiveBroker(data_dir, redis_url, env=dict(env))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def broker_records(
    settings: Settings, school_id: str, area: str, *, updated_since: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """Every record the broker's cache holds for the area (or changed since a time)."""
    resources = Resources.build(settings)
    try:
        keyring = KeyRing(resources.key_provider, SqlDataKeyStore(resources.engine))
        service = CacheService(keyring=keyring, blobs=resources.blobs, hot=None)
        return read_records(service, resources.engine, school_id, area, updated_since=updated_since)
    finally:
        resources.close()


def read_records(
    service: CacheService,
    engine: Engine,
    school_id: str,
    area: str,
    *,
    updated_since: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """Every record `service` (the broker's cache) holds for the area, page by page."""
    out: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    with Session(engine) as session:
        while True:
            page = service.read_page(
                session, school_id=school_id, area=area, fields=None,
                updated_since=updated_since, limit=1000, cursor=cursor,
                now=datetime.now(UTC),
            )  # fmt: skip
            body = orjson.loads(page.body)
            out.update({r["id"]: r for r in body["data"]})
            cursor = body["meta"]["next_cursor"]
            if not cursor:
                break
        session.rollback()  # a test reads; it must not count as a partner's read
    return out


def queue_commands(
    settings: Settings, school_id: str, commands: list[tuple[str, dict[str, Any]]]
) -> list[str]:
    """Queue commands for the school's agent as the broker does; their ids."""
    resources = Resources.build(settings)
    try:
        with session_scope(resources.engine) as session:
            return [
                queue_command(
                    session, school_id=school_id, kind=CommandKind(kind), args=args,
                    reason="test", now=datetime.now(UTC),
                ).id
                for kind, args in commands
            ]  # fmt: skip
    finally:
        resources.close()


def command_states(settings: Settings, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    resources = Resources.build(settings)
    try:
        with session_scope(resources.engine) as session:
            rows = [session.get(AgentCommand, i) for i in ids]
            return {r.id: (r.status.value, r.result_detail) for r in rows if r is not None}
    finally:
        resources.close()


def upload_batches(settings: Settings, school_id: str) -> list[UploadBatch]:
    """Every upload the broker applied for the school (one row per batch_id, ever)."""
    resources = Resources.build(settings)
    try:
        with Session(resources.engine) as session:
            rows = session.scalars(
                select(UploadBatch).where(col(UploadBatch.school_id) == school_id)
            ).all()
            session.expunge_all()
            return list(rows)
    finally:
        resources.close()


def without_nulls(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Null and absent are the same in the catalogue ("every field may be null")."""
    return {k: {f: v for f, v in r.items() if v is not None} for k, r in records.items()}
