"""Write-back end to end: a real broker (uvicorn subprocess, SQLite, Valkey), the synthetic
agent, a partner over HTTP and a webhook receiver.

- 30 session marks and 2 behaviour events are applied by the agent, read back through the
  read API after the next extract, and announced by a `write.applied` webhook that the
  `standardwebhooks` library verifies;
- the agent killed (-9) mid-apply (right after the MIS took a record, before the agent's
  journal did) and restarted: every record is in the MIS exactly once.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyotp
import pytest
from standardwebhooks import Webhook

from agents.config import parse_config
from agents.mis._synthetic.writes import CRASH_ENV
from agents.mis.synthetic import SyntheticMis
from agents.runner import Agent
from agents.state import AgentState
from broker.clock import Clock, FileClock, SystemClock, rfc3339
from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import add_admin
from broker.webhooks.addresses import UrlPolicy, parse_networks
from broker.webhooks.recipients import consent_recipients
from broker.webhooks.service import deliver_due, fan_out
from broker.webhooks.settings import WebhookSettings
from broker.webhooks.transport import webhook_client
from tests.agents.agent_broker import ROOT, LiveBroker, add_school, live_broker
from tests.agents.test_agent_e2e import agent_command
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.slow

DAY = date(2025, 11, 19)  # a Wednesday: every pupil has marks that day
PASSWORD = "Corr3ct!horse-battery"
AREAS = ("students.basic", "attendance.marks", "behaviour")
_DFE = itertools.count(5100)
LOCAL = UrlPolicy(loopback_http=True, allowed_networks=parse_networks("127.0.0.0/8"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("broker")
    add_school(data_dir, redis_url, "Write Academy", "3835000")  # creates the database
    with live_broker(data_dir, redis_url) as running:
        yield running


class Hooks:
    """A partner's webhook endpoint: keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                hooks.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    try:
        yield receiver
    finally:
        receiver.close()


@dataclass
class Setup:
    broker: LiveBroker
    school_id: str
    agent_key: str
    token: str
    webhook_secret: str
    admin_token: str
    client: tuple[str, str]

    def partner(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return httpx.request(method, self.broker.url + path, headers=headers, timeout=60, **kw)


def prepare(broker: LiveBroker, hooks: Hooks, at: datetime | None = None) -> Setup:
    """A school, its admin, a partner asking to write; the admin grants read_write."""
    dfe = f"383{next(_DFE):04d}"
    school_id, agent_key = add_school(broker.data_dir, broker.redis_url, "Brook School", dfe)
    resources = Resources.build(broker.settings(), SystemClock())
    try:
        now = datetime.now(UTC)
        with session_scope(resources.engine) as session:
            admin = add_admin(
                SchoolRepository(session), resources.sealer, school_id=school_id,
                email=f"head{dfe}@brook.sch.uk", password=PASSWORD, now=now,
            )  # fmt: skip
            partner = register_partner(
                PartnerRepository(session), resources.sealer, name=f"Registerly {dfe}", areas=AREAS,
                reasons={"behaviour": "Merits from the classroom app"}, webhook_url=hooks.url,
                now=now, url_policy=LOCAL,
            )  # fmt: skip
    finally:
        resources.close()
    login = httpx.post(
        broker.url + "/v1/admin/login",
        json={"email": admin.admin.email, "password": PASSWORD,
              "totp": pyotp.TOTP(admin.totp_secret).at(at or datetime.now(UTC))},
        timeout=60,
    )  # fmt: skip
    assert login.status_code == 200, login.text
    granted = httpx.post(
        broker.url + "/v1/admin/consents",
        json={"partner_id": partner.partner.id, "areas": list(AREAS), "mode": "read_write"},
        headers={"Authorization": f"Bearer {login.json()['token']}"},
        timeout=60,
    )
    assert granted.status_code == 201, granted.text
    token = httpx.post(
        broker.url + "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": partner.partner.client_id,
              "client_secret": partner.client_secret},
        timeout=60,
    )  # fmt: skip
    assert token.status_code == 200, token.text
    return Setup(broker, school_id, agent_key, token.json()["access_token"],
                 partner.webhook_secret, login.json()["token"],
                 (partner.partner.client_id, partner.client_secret))  # fmt: skip


def agent_document(setup: Setup, state_dir: Path) -> dict[str, Any]:
    return {
        "broker_url": setup.broker.url,
        "agent_key": setup.agent_key,
        "state_dir": str(state_dir),
        "mis": {"adapter": "synthetic", "seed": 9, "pupils": 60, "phase": "secondary",
                "day": DAY.isoformat()},
        "upload": {"retry_budget_seconds": 60, "retry_cap_seconds": 2},
    }  # fmt: skip


def the_writes(pupils: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    marks = [
        {"student_id": pupils[i], "date": DAY.isoformat(), "session": "AM", "mark": "B",
         "minutes_late": i}
        for i in range(30)
    ]  # fmt: skip
    events = [
        {"student_id": pupils[0], "type": "Merit", "date": DAY.isoformat(),
         "description": "Science fair entry", "points": 3},
        {"student_id": pupils[1], "type": "Merit", "date": DAY.isoformat(),
         "description": "Reading champion", "points": 2},
    ]  # fmt: skip
    return marks, events


def post_writes(
    setup: Setup, marks: list[dict[str, Any]], events: list[dict[str, Any]]
) -> list[str]:
    ids = []
    for area, records in (("attendance.marks", marks), ("behaviour", events)):
        response = setup.partner(
            "POST", f"/v1/schools/{setup.school_id}/writes/{area}",
            json={"records": records}, headers={"Idempotency-Key": f"{area}-1"},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        ids.append(response.json()["write_id"])
    return ids


def read_all(setup: Setup, area: str) -> dict[str, dict[str, Any]]:
    response = setup.partner("GET", f"/v1/schools/{setup.school_id}/data/{area}?limit=1000")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["meta"]["next_cursor"] is None
    return {r["id"]: r for r in body["data"]}


def deliver_webhooks(broker: LiveBroker, clock: Clock | None = None) -> None:
    """What the Celery worker does every 5 s, done here once (no worker in this test)."""
    resources = Resources.build(broker.settings(), clock or SystemClock())
    settings = WebhookSettings()
    try:
        with session_scope(resources.engine) as session:
            recipients = consent_recipients(session, resources.settings.consent.revocation_grace)
            fan_out(session, recipients, resources.clock.now())
        with webhook_client(LOCAL) as http:
            deliver_due(resources.engine, resources.sealer, http, resources.clock,
                        settings.policy())  # fmt: skip
    finally:
        resources.close()


@contextmanager
def agent_with_writes(
    setup: Setup, tmp_path: Path
) -> Iterator[tuple[Agent, SyntheticMis, list[str]]]:
    """The school's agent, having uploaded the school; the partner's two writes queued."""
    config = parse_config(agent_document(setup, tmp_path / "state"), tmp_path)
    mis = SyntheticMis(seed=9, pupils=60, phase="secondary", day=DAY,
                       write_store=tmp_path / "mis.db")  # fmt: skip
    agent = Agent(config, mis, AgentState.open(config.state_dir))
    try:
        assert agent.run_once() is None  # uploads the school, reports capabilities
        pupils = sorted(read_all(setup, "students.basic"))
        yield agent, mis, post_writes(setup, *the_writes(pupils))
    finally:
        agent.close()


def test_marks_and_behaviour_are_applied_read_back_and_announced(
    tmp_path: Path, broker: LiveBroker, hooks: Hooks
) -> None:
    setup = prepare(broker, hooks)
    with agent_with_writes(setup, tmp_path) as (agent, _, (marks_id, events_id)):
        agent.heartbeat()  # the next heartbeat names, fetches, applies, reports, extracts
    pupils = sorted(read_all(setup, "students.basic"))
    marks, _ = the_writes(pupils)

    marks_write = setup.partner("GET", f"/v1/writes/{marks_id}").json()
    events_write = setup.partner("GET", f"/v1/writes/{events_id}").json()
    assert marks_write["status"] == events_write["status"] == "applied"
    assert all(r["status"] == "applied" for r in marks_write["results"])
    mis_marks = [r["mis_id"] for r in marks_write["results"]]
    mis_events = [r["mis_id"] for r in events_write["results"]]

    held_marks = read_all(setup, "attendance.marks")
    for mis_id, sent in zip(mis_marks, marks, strict=True):
        assert held_marks[mis_id]["mark"] == "B"
        assert held_marks[mis_id]["minutes_late"] == sent["minutes_late"]
    held_events = read_all(setup, "behaviour")
    assert [held_events[m]["description"] for m in mis_events] == [
        "Science fair entry", "Reading champion"
    ]  # fmt: skip

    deliver_webhooks(broker)
    verifier = Webhook(setup.webhook_secret)
    payloads = [verifier.verify(body, headers) for headers, body in hooks.received]
    applied = {p["data"]["write_id"]: p for p in payloads if p["type"] == "write.applied"}
    assert set(applied) == {marks_id, events_id}
    assert [r["mis_id"] for r in applied[marks_id]["data"]["results"]] == mis_marks
    updated = {p["data"].get("area") for p in payloads if p["type"] == "data.updated"}
    assert {"attendance.marks", "behaviour"} <= updated


def test_kill_9_mid_apply_then_restart_applies_each_record_exactly_once(
    tmp_path: Path, broker: LiveBroker, hooks: Hooks
) -> None:
    setup = prepare(broker, hooks)
    config_path = tmp_path / "agent.toml"
    document = agent_document(setup, tmp_path / "agent-state")
    mis_table = "\n".join(
        f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in document["mis"].items()
    ).replace("'", '"')
    config_path.write_text(
        f'broker_url = "{document["broker_url"]}"\nagent_key = "{setup.agent_key}"\n'
        f'state_dir = "agent-state"\n[mis]\n{mis_table}\n'
        "[upload]\nretry_cap_seconds = 2\nretry_budget_seconds = 120\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}

    def run_once(extra: dict[str, str] | None = None) -> int:
        done = subprocess.run(
            agent_command(config_path, "once"), cwd=ROOT, env={**env, **(extra or {})},
            capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        return done.returncode

    assert run_once() == 0  # uploads the school and reports the write capabilities
    pupils = sorted(read_all(setup, "students.basic"))
    marks, events = the_writes(pupils)
    marks_id, events_id = post_writes(setup, marks, events)

    # The MIS takes its 10th record and the process dies before the journal notes it.
    assert run_once({CRASH_ENV: "10"}) == -signal.SIGKILL
    store = tmp_path / "agent-state" / "synthetic-mis.db"
    state = AgentState.open(tmp_path / "agent-state")
    try:
        assert mis_count(store) == 10
        assert state.journal_counts() == {"applied": 9}  # one applied, not journalled
    finally:
        state.close()
    assert setup.partner("GET", f"/v1/writes/{marks_id}").json()["status"] == "delivered"

    assert run_once() == 0
    assert wait_until(
        lambda: setup.partner("GET", f"/v1/writes/{events_id}").json()["status"] == "applied",
        timeout=120, interval=0.5,
    )  # fmt: skip
    assert mis_count(store) == 32
    keys = mis_keys(store)
    assert sorted(keys) == sorted(
        [f"{marks_id}:{i}" for i in range(30)] + [f"{events_id}:{i}" for i in range(2)]
    )
    write = setup.partner("GET", f"/v1/writes/{marks_id}").json()
    assert write["status"] == "applied"
    assert [r["mis_id"] for r in write["results"]] == [keys[f"{marks_id}:{i}"] for i in range(30)]


def mis_count(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return int(db.execute("SELECT COUNT(*) FROM applied").fetchone()[0])


def mis_keys(store: Path) -> dict[str, str]:
    with sqlite3.connect(store) as db:
        return {str(k): str(m) for k, m in db.execute("SELECT key, mis_id FROM applied")}


# --- lifetimes on the broker's injected clock ------------------------------------------------


@pytest.fixture(scope="module")
def clocked(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[LiveBroker, Path]]:
    """A broker whose clock is a file the test moves (API and this test's workers alike)."""
    data_dir = tmp_path_factory.mktemp("clocked")
    clock_file = data_dir / "now.txt"
    clock_file.write_text(rfc3339(datetime.now(UTC)), encoding="utf-8")
    add_school(data_dir, redis_url, "Clock Academy", "3836000")
    with live_broker(data_dir, redis_url, MISBROKER_CLOCK=f"file:{clock_file}") as running:
        yield running, clock_file


def move_clock(clock_file: Path, delta: timedelta) -> None:
    now = FileClock(clock_file).now()
    clock_file.write_text(rfc3339(now + delta), encoding="utf-8")
    stat = clock_file.stat()  # the broker re-reads the file when its mtime changes
    os.utime(clock_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def fresh_token(setup: Setup) -> None:
    client_id, secret = setup.client
    token = httpx.post(
        setup.broker.url + "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id,
              "client_secret": secret},
        timeout=60,
    )  # fmt: skip
    assert token.status_code == 200, token.text
    setup.token = token.json()["access_token"]


def test_an_agent_offline_past_the_expiry_gets_nothing_and_the_partner_hears_expired(
    tmp_path: Path, clocked: tuple[LiveBroker, Path], hooks: Hooks
) -> None:
    broker, clock_file = clocked
    setup = prepare(broker, hooks, FileClock(clock_file).now())
    with agent_with_writes(setup, tmp_path) as (agent, mis, (marks_id, events_id)):
        # The agent goes offline; a day passes on the broker's clock.
        move_clock(clock_file, timedelta(hours=24, seconds=1))
        fresh_token(setup)
        for write_id in (marks_id, events_id):
            seen = setup.partner("GET", f"/v1/writes/{write_id}").json()
            assert (seen["status"], seen["reason"]) == ("expired", "expired")
        agent.heartbeat()  # back online: nothing is offered, nothing applied
        assert mis.writes.count() == 0
    deliver_webhooks(broker, FileClock(clock_file))
    failed = [
        orjson.loads(body) for headers, body in hooks.received
        if signed(setup.webhook_secret, headers, body)
        and orjson.loads(body)["type"] == "write.failed"
    ]  # fmt: skip
    assert {(p["data"]["write_id"], p["data"]["reason"]) for p in failed} == {
        (marks_id, "expired"), (events_id, "expired")
    }  # fmt: skip


def test_revoking_the_consent_cancels_the_queued_writes(
    tmp_path: Path, clocked: tuple[LiveBroker, Path], hooks: Hooks
) -> None:
    broker, clock_file = clocked
    setup = prepare(broker, hooks, FileClock(clock_file).now())
    with agent_with_writes(setup, tmp_path) as (agent, mis, (marks_id, events_id)):
        admin = {"Authorization": f"Bearer {setup.admin_token}"}
        consents = httpx.get(broker.url + "/v1/admin/consents", headers=admin, timeout=60)
        (consent,) = consents.json()["data"]
        end = rfc3339(FileClock(clock_file).now() + timedelta(days=1))
        revoked = httpx.post(
            broker.url + f"/v1/admin/consents/{consent['consent_id']}/revoke",
            json={"end_at": end}, headers=admin, timeout=60,
        )  # fmt: skip
        assert revoked.status_code == 200, revoked.text
        for write_id in (marks_id, events_id):
            seen = setup.partner("GET", f"/v1/writes/{write_id}").json()
            assert (seen["status"], seen["reason"]) == ("cancelled", "cancelled")
        agent.heartbeat()
        assert mis.writes.count() == 0


def signed(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks signature over the body, checked with the library's signer (its
    `verify` would also refuse a timestamp a day ahead of this machine's clock)."""
    timestamp = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(headers["webhook-id"], timestamp, body.decode())
    return expected in headers["webhook-signature"].split(" ")
