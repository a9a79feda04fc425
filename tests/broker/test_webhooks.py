"""Webhook fan-out and delivery, against a real receiver that verifies with `standardwebhooks`.

The receiver is a real HTTP server; it checks every request with the library's
`Webhook.verify` (never our signing code), whose five-minute timestamp tolerance is read
from the test's frozen clock instead of the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks.webhooks as swh
from fastapi import FastAPI, Request, Response
from sqlalchemy import update
from sqlmodel import Session, col, select
from standardwebhooks import Webhook, WebhookVerificationError

import broker.worker
from broker.clock import FrozenClock, rfc3339
from broker.db import session_scope, upgrade
from broker.events.models import OutboxEvent
from broker.events.service import emit
from broker.partners.models import Partner
from broker.partners.repository import PartnerRepository
from broker.partners.service import NewPartner, register_partner
from broker.partners.service import webhook_context as context
from broker.resources import Resources
from broker.schools.repository import SchoolRepository
from broker.schools.service import register_school
from broker.webhooks import addresses
from broker.webhooks.addresses import UrlPolicy, parse_networks
from broker.webhooks.models import DeliveryStatus, WebhookDelivery
from broker.webhooks.policy import RetryPolicy
from broker.webhooks.recipients import consent_recipients
from broker.webhooks.repository import WebhookRepository
from broker.webhooks.service import (
    USER_AGENT,
    DeliveryNotFoundError,
    InvalidDeliveryCursorError,
    deliver_due,
    fan_out,
    list_deliveries,
    redeliver,
)
from broker.webhooks.tasks import deliver_due_task, fan_out_task
from broker.webhooks.transport import webhook_client
from consent.service import ConsentService
from tests.conftest import T0, make_settings
from tests.support.live import live_server
from tests.support.servers import free_port

POLICY = RetryPolicy(timeout=2.0, jitter=0.0)
# The receiver is on 127.0.0.1 over http: the test environment allows loopback http, and
# loopback is allowed as a partner network on purpose (production refuses both).
LOCAL = UrlPolicy(loopback_http=True, allowed_networks=parse_networks("127.0.0.0/8"))
SCHOOL = "sch_webhooktest"


@pytest.fixture(autouse=True)
def _no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partners' `*.example` names never reach a real resolver; the receiver is a literal."""

    def resolve(host: str, _port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not resolved in tests")

    monkeypatch.setattr(addresses, "system_resolver", resolve)


# -- the receiver -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sleep:
    """Answer `status` after `seconds`: longer than the timeout, the broker gives up first."""

    seconds: float
    status: int = 204


Action = int | Sleep


@dataclass
class Received:
    key: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    error: str | None


@dataclass
class Receiver:
    """Partners' webhook endpoints at `/hook/{key}`, each with its secret and answers."""

    url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, list[Action]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def for_key(self, key: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.key == key]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook/{key}")
        async def hook(key: str, request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            try:
                payload, error = Webhook(self.secrets[key]).verify(body, headers), None
            except WebhookVerificationError as exc:
                payload, error = None, str(exc)
            with self.lock:
                script = self.scripts.get(key) or [204]
                seen = sum(1 for r in self.received if r.key == key)
                action = script[min(seen, len(script) - 1)]
                self.received.append(Received(key, headers, body, payload, error))
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
                action = action.status
            return Response(status_code=400 if error else action)

        @app.post("/moved/{key}")
        async def moved(key: str) -> Response:
            with self.lock:
                self.received.append(Received(f"moved:{key}", {}, b"", None, None))
            return Response(status_code=307, headers={"location": f"/hook/{key}"})

        return app


def library_time_from(clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's timestamp check reads the frozen clock: the only fake here is time."""

    class ClockDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> ClockDatetime:
            return cls.fromtimestamp(clock.now().timestamp(), tz)

    monkeypatch.setattr(swh, "datetime", ClockDatetime)


@pytest.fixture
def receiver(clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    library_time_from(clock, monkeypatch)
    found = Receiver()
    with live_server(found.app()) as url:
        found.url = url
        yield found


# -- the broker's side ------------------------------------------------------------------


@pytest.fixture
def resources(tmp_path: Path, database_url: str, clock: FrozenClock) -> Iterator[Resources]:
    res = Resources.build(make_settings(tmp_path / "data", database_url=database_url), clock)
    upgrade(res.engine)
    yield res
    res.close()


@pytest.fixture
def sqlite_resources(tmp_path: Path, clock: FrozenClock) -> Iterator[Resources]:
    """For what only HTTP decides: the database layer is covered on both by the others."""
    res = Resources.build(make_settings(tmp_path / "data"), clock)
    upgrade(res.engine)
    yield res
    res.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with webhook_client(LOCAL) as client:
        yield client


def add_partner(
    res: Resources, clock: FrozenClock, name: str, url: str | None, receiver: Receiver | None
) -> NewPartner:
    with session_scope(res.engine) as session:
        created = register_partner(
            PartnerRepository(session),
            res.sealer,
            name=name,
            areas=["students.basic", "timetable"],
            reasons={},
            webhook_url=url,
            now=clock.now(),
            url_policy=LOCAL,
        )
    if receiver is not None:
        receiver.secrets[name] = created.webhook_secret
    return created


def hooked(
    res: Resources,
    clock: FrozenClock,
    receiver: Receiver,
    name: str = "ExamPro",
    script: Sequence[Action] = (204,),
) -> NewPartner:
    receiver.scripts[name] = list(script)
    return add_partner(res, clock, name, f"{receiver.url}/hook/{name}", receiver)


def emit_consent(
    res: Resources, clock: FrozenClock, partner_id: str, **payload: Any
) -> OutboxEvent:
    with session_scope(res.engine) as session:
        event_id = emit(
            session,
            "consent.granted",
            school_id=SCHOOL,
            partner_id=partner_id,
            payload={"consent_id": "con_1", "status": "active", **payload},
            now=clock.now(),
        )
    return stored_event(res, event_id)


def stored_event(res: Resources, event_id: str) -> OutboxEvent:
    """The event as emit stored it."""
    with session_scope(res.engine) as session:
        event = session.get(OutboxEvent, event_id)
        assert event is not None
        return event


def nobody(_school: str, _area: str, _at: datetime) -> list[str]:
    return []


def run_fan_out(
    res: Resources, clock: FrozenClock, recipients: Callable[..., Sequence[str]] = nobody
) -> int:
    with session_scope(res.engine) as session:
        return fan_out(session, recipients, clock.now(), limit=100)


def run_deliver(
    res: Resources, clock: FrozenClock, http: httpx.Client, policy: RetryPolicy = POLICY
) -> list[DeliveryStatus]:
    return [a.status for a in deliver_due(res.engine, res.sealer, http, clock, policy)]


def deliveries(res: Resources) -> list[WebhookDelivery]:
    with Session(res.engine) as session:
        stmt = select(WebhookDelivery).order_by(col(WebhookDelivery.partner_id))
        return list(session.exec(stmt).all())


def only_delivery(res: Resources) -> WebhookDelivery:
    [delivery] = deliveries(res)
    return delivery


# -- delivery and retries ---------------------------------------------------------------


def test_retries_after_500_until_delivered_with_a_stable_id_and_valid_signatures(
    resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    partner = hooked(resources, clock, receiver, script=[500, 500, 500, 204])
    event = emit_consent(resources, clock, partner.partner.id, areas=["timetable"])
    assert run_fan_out(resources, clock) == 1
    start = clock.now()

    sent_at = []
    waits = (timedelta(0), timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30))
    outcomes = [DeliveryStatus.PENDING] * 3 + [DeliveryStatus.DELIVERED]
    for wait, outcome in zip(waits, outcomes, strict=True):
        if wait:
            clock.advance(wait - timedelta(seconds=1))
            assert run_deliver(resources, clock, http) == [], "nothing is due before the backoff"
            clock.advance(timedelta(seconds=1))
        sent_at.append(clock.now())
        assert run_deliver(resources, clock, http) == [outcome]

    seen = receiver.for_key("ExamPro")
    assert [r.error for r in seen] == [None] * 4, "every attempt verifies with the library"
    delivery = only_delivery(resources)
    assert {r.headers["webhook-id"] for r in seen} == {delivery.id}
    assert delivery.id.startswith("msg_")
    assert [int(r.headers["webhook-timestamp"]) for r in seen] == [
        int(t.timestamp()) for t in sent_at
    ]
    assert len({r.body for r in seen}) == 1, "the same body on every attempt"
    assert seen[0].payload == {
        "type": "consent.granted",
        "timestamp": rfc3339(event.created_at),
        "data": {
            "consent_id": "con_1",
            "status": "active",
            "areas": ["timetable"],
            "school_id": SCHOOL,
        },
    }
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["user-agent"] == USER_AGENT
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts == 4
    assert delivery.last_status_code == 204
    assert delivery.delivered_at == sent_at[-1] == start + timedelta(minutes=35, seconds=5)
    assert delivery.next_attempt_at is None
    clock.advance(timedelta(days=1))
    assert run_deliver(resources, clock, http) == []
    assert len(receiver.for_key("ExamPro")) == 4


def test_a_receiver_that_always_fails_is_retried_for_24_hours_then_failed(
    resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    partner = hooked(resources, clock, receiver, script=[500])
    emit_consent(resources, clock, partner.partner.id)
    run_fan_out(resources, clock)
    expires_at = clock.now() + timedelta(hours=24)

    waits = []
    while True:
        assert run_deliver(resources, clock, http) == [DeliveryStatus.PENDING]
        delivery = only_delivery(resources)
        assert delivery.next_attempt_at is not None
        if delivery.next_attempt_at == expires_at:
            break
        waits.append(delivery.next_attempt_at - clock.now())
        clock.set(delivery.next_attempt_at)
    assert waits == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
    ], "the Standard Webhooks schedule, capped at the window's end"

    clock.set(expires_at - timedelta(seconds=1))
    assert run_deliver(resources, clock, http) == []
    assert only_delivery(resources).status is DeliveryStatus.PENDING

    clock.set(expires_at)
    assert run_deliver(resources, clock, http) == [DeliveryStatus.FAILED]
    delivery = only_delivery(resources)
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.attempts == len(waits) + 2
    assert delivery.last_status_code == 500
    assert delivery.last_error == "HTTP 500"
    assert delivery.next_attempt_at is None
    clock.advance(timedelta(days=2))
    assert run_deliver(resources, clock, http) == []
    assert len(receiver.for_key("ExamPro")) == delivery.attempts
    assert all(r.error is None for r in receiver.for_key("ExamPro"))


def test_an_attempt_due_after_the_window_is_still_made_once(
    sqlite_resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    """A worker outage longer than the window: one last try, then failed."""
    partner = hooked(sqlite_resources, clock, receiver, script=[503])
    emit_consent(sqlite_resources, clock, partner.partner.id)
    run_fan_out(sqlite_resources, clock)
    clock.advance(timedelta(hours=30))
    assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.FAILED]
    assert only_delivery(sqlite_resources).attempts == 1


def test_410_gone_fails_at_once(
    sqlite_resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    partner = hooked(sqlite_resources, clock, receiver, script=[410, 204])
    emit_consent(sqlite_resources, clock, partner.partner.id)
    run_fan_out(sqlite_resources, clock)
    assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.FAILED]
    clock.advance(timedelta(hours=1))
    assert run_deliver(sqlite_resources, clock, http) == []
    delivery = only_delivery(sqlite_resources)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.FAILED,
        1,
        410,
    )
    assert len(receiver.for_key("ExamPro")) == 1


def test_a_timeout_is_retried(
    sqlite_resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    partner = hooked(sqlite_resources, clock, receiver, script=[Sleep(0.8), 204])
    emit_consent(sqlite_resources, clock, partner.partner.id)
    run_fan_out(sqlite_resources, clock)
    quick = RetryPolicy(timeout=0.3, jitter=0.0)
    assert run_deliver(sqlite_resources, clock, http, quick) == [DeliveryStatus.PENDING]
    delivery = only_delivery(sqlite_resources)
    assert (delivery.last_error, delivery.last_status_code) == ("timeout", None)
    assert delivery.next_attempt_at == clock.now() + timedelta(seconds=5)
    clock.advance(timedelta(seconds=5))
    assert run_deliver(sqlite_resources, clock, http, quick) == [DeliveryStatus.DELIVERED]
    assert only_delivery(sqlite_resources).attempts == 2


def test_connection_refused_is_retried(
    sqlite_resources: Resources, clock: FrozenClock, http: httpx.Client
) -> None:
    partner = add_partner(
        sqlite_resources, clock, "Offline", f"http://127.0.0.1:{free_port()}/", None
    )
    emit_consent(sqlite_resources, clock, partner.partner.id)
    run_fan_out(sqlite_resources, clock)
    assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.PENDING]
    assert only_delivery(sqlite_resources).last_error == "request failed: ConnectError"


def test_redirects_are_not_followed(
    sqlite_resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    created = add_partner(sqlite_resources, clock, "Mover", f"{receiver.url}/moved/Mover", receiver)
    emit_consent(sqlite_resources, clock, created.partner.id)
    run_fan_out(sqlite_resources, clock)
    assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.PENDING]
    assert only_delivery(sqlite_resources).last_status_code == 307
    assert [r.key for r in receiver.received] == ["moved:Mover"]


def test_a_partner_whose_webhook_url_was_removed_fails_the_delivery(
    resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    partner = hooked(resources, clock, receiver)
    emit_consent(resources, clock, partner.partner.id)
    run_fan_out(resources, clock)
    with session_scope(resources.engine) as session:
        session.execute(update(Partner).values(webhook_url=None))
    assert run_deliver(resources, clock, http) == [DeliveryStatus.FAILED]
    assert only_delivery(resources).last_error == "partner has no webhook URL"
    assert receiver.received == []


def reseal(res: Resources, partner_id: str, sealed: bytes) -> None:
    with session_scope(res.engine) as session:
        stmt = update(Partner).where(col(Partner.id) == partner_id)
        session.execute(stmt.values(webhook_secret_sealed=sealed))


def test_a_broken_secret_costs_an_attempt_and_never_stops_the_batch(
    resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    """An unreadable seal, or a secret the library cannot use: retried, then failed at 24 h."""
    unreadable = hooked(resources, clock, receiver, "Unreadable").partner.id
    malformed = hooked(resources, clock, receiver, "Malformed").partner.id
    healthy = hooked(resources, clock, receiver, "Healthy").partner.id
    reseal(resources, unreadable, b"not a sealed secret")
    reseal(resources, malformed, resources.sealer.seal(b"whsec_!!", context=context(malformed)))
    for partner_id in (unreadable, malformed, healthy):
        emit_consent(resources, clock, partner_id)
    run_fan_out(resources, clock)
    assert sorted(run_deliver(resources, clock, http)) == ["delivered", "pending", "pending"]
    errors = {d.partner_id: d.last_error for d in deliveries(resources)}
    assert errors == {
        unreadable: "webhook secret unreadable",
        malformed: "internal error: EmptyWebhookSecretError",
        healthy: None,
    }
    assert [r.key for r in receiver.received] == ["Healthy"]
    clock.advance(timedelta(hours=24))
    assert run_deliver(resources, clock, http) == ["failed", "failed"]


def test_a_claimed_attempt_is_hidden_until_its_lease_ends(
    resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    """A worker that crashed after claiming: the delivery is sent again, later (at least once)."""
    partner = hooked(resources, clock, receiver)
    emit_consent(resources, clock, partner.partner.id)
    run_fan_out(resources, clock)
    with session_scope(resources.engine) as session:
        now = clock.now()
        assert WebhookRepository(session).claim_due(now, now + POLICY.lease) is not None
    assert run_deliver(resources, clock, http) == []
    clock.advance(POLICY.lease - timedelta(seconds=1))
    assert run_deliver(resources, clock, http) == []
    clock.advance(timedelta(seconds=1))
    assert run_deliver(resources, clock, http) == [DeliveryStatus.DELIVERED]
    assert len(receiver.for_key("ExamPro")) == 1


def test_concurrent_workers_send_each_delivery_once(
    resources: Resources, clock: FrozenClock, receiver: Receiver
) -> None:
    partners = [hooked(resources, clock, receiver, f"P{i}", script=[Sleep(0.1)]) for i in range(6)]
    for p in partners:
        emit_consent(resources, clock, p.partner.id)
    run_fan_out(resources, clock)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with webhook_client(LOCAL) as client:
                run_deliver(resources, clock, client)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(r.key for r in receiver.received) == [f"P{i}" for i in range(6)]
    assert {d.status for d in deliveries(resources)} == {DeliveryStatus.DELIVERED}


# -- fan-out ----------------------------------------------------------------------------


def test_fan_out_is_idempotent(resources: Resources, clock: FrozenClock) -> None:
    partner = add_partner(resources, clock, "ExamPro", "https://exampro.example/hook", None)
    event = emit_consent(resources, clock, partner.partner.id)
    assert run_fan_out(resources, clock) == 1
    assert run_fan_out(resources, clock) == 0
    # A second worker that read the event before the first marked it dispatched:
    with session_scope(resources.engine) as session:
        session.execute(update(OutboxEvent).values(dispatched_at=None))
    assert run_fan_out(resources, clock) == 1
    [delivery] = deliveries(resources)
    assert (delivery.event_id, delivery.partner_id) == (event.id, partner.partner.id)
    with Session(resources.engine) as session:
        [row] = session.exec(select(OutboxEvent)).all()
        assert row.dispatched_at == clock.now()


def test_data_events_go_to_the_recipients_with_a_webhook_url(
    resources: Resources, clock: FrozenClock
) -> None:
    a = add_partner(resources, clock, "Alpha", "https://alpha.example/hook", None)
    b = add_partner(resources, clock, "Beta", "https://beta.example/hook", None)
    c = add_partner(resources, clock, "NoHook", None, None)
    add_partner(resources, clock, "Unasked", "https://unasked.example/hook", None)
    asked: list[tuple[str, str, datetime]] = []

    def recipients(school_id: str, area: str, at: datetime) -> list[str]:
        asked.append((school_id, area, at))
        return [c.partner.id, b.partner.id, a.partner.id]

    with session_scope(resources.engine) as session:
        event_id = emit(
            session,
            "data.updated",
            school_id=SCHOOL,
            area="timetable",
            payload={"school_id": SCHOOL, "area": "timetable", "as_of": rfc3339(clock.now())},
            now=clock.now(),
        )
    event = stored_event(resources, event_id)
    assert event.created_at == clock.now()
    clock.advance(timedelta(minutes=1))
    assert run_fan_out(resources, clock, recipients) == 1
    assert asked == [(SCHOOL, "timetable", event.created_at)]
    got = deliveries(resources)
    assert sorted(d.partner_id for d in got) == sorted([a.partner.id, b.partner.id])
    assert {d.event_type for d in got} == {"data.updated"}
    assert got[0].payload["data"] == {
        "school_id": SCHOOL,
        "area": "timetable",
        "as_of": rfc3339(event.created_at),
    }


def test_partners_without_a_webhook_url_get_no_deliveries(
    resources: Resources, clock: FrozenClock
) -> None:
    partner = add_partner(resources, clock, "Silent", None, None)
    emit_consent(resources, clock, partner.partner.id)
    assert run_fan_out(resources, clock) == 1
    assert deliveries(resources) == []
    assert run_fan_out(resources, clock) == 0, "the event is dispatched all the same"


def test_consent_recipients_follow_the_consent_history(
    resources: Resources, clock: FrozenClock
) -> None:
    with session_scope(resources.engine) as session:
        school = register_school(
            SchoolRepository(session), name="Hilltop", dfe_number="3024012", urn=None, now=T0
        ).school
    ids = {
        name: add_partner(resources, clock, name, f"https://{name}.example/", None).partner.id
        for name in ("reader", "other_area", "revoked", "later")
    }
    grace = timedelta(hours=72)
    with session_scope(resources.engine) as session:
        service = ConsentService(session, grace=grace)
        requested = ["students.basic", "timetable"]

        def grant(name: str, areas: list[str], at: datetime) -> str:
            view = service.grant(
                school_id=school.id,
                partner_id=ids[name],
                areas=areas,
                mode="read",
                requested=requested,
                actor="admin:test",
                now=at,
            )
            return view.consent.id

        grant("reader", ["timetable"], T0)
        grant("other_area", ["students.basic"], T0)
        revoked = grant("revoked", ["timetable"], T0)
        service.revoke(
            revoked,
            school_id=school.id,
            end_at=T0 + timedelta(hours=1),
            actor="admin:test",
            now=T0 + timedelta(minutes=1),
        )
        grant("later", ["timetable"], T0 + timedelta(hours=3))
    with session_scope(resources.engine) as session:
        recipients = consent_recipients(session, grace)
        assert recipients(school.id, "timetable", T0 + timedelta(minutes=30)) == sorted(
            [ids["reader"], ids["revoked"]]
        )
        assert recipients(school.id, "timetable", T0 + timedelta(hours=2)) == [ids["reader"]]
        assert recipients(school.id, "timetable", T0 + timedelta(hours=4)) == sorted(
            [ids["reader"], ids["later"]]
        )
        assert recipients("sch_unknown", "timetable", T0) == []


def test_a_real_consent_change_reaches_the_partner(
    resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    """The consent service's events, through the outbox, to a verified webhook."""
    partner = hooked(resources, clock, receiver)
    with session_scope(resources.engine) as session:
        school = register_school(
            SchoolRepository(session), name="Hilltop", dfe_number="3024012", urn=None, now=T0
        ).school

        def to_outbox(type_: str, consent: Any, payload: dict[str, Any], now: datetime) -> None:
            emit(
                session,
                type_,
                school_id=consent.school_id,
                partner_id=consent.partner_id,
                payload=payload,
                now=now,
            )

        service = ConsentService(session, grace=timedelta(hours=72), on_event=to_outbox)
        view = service.grant(
            school_id=school.id,
            partner_id=partner.partner.id,
            areas=["timetable"],
            mode="read",
            requested=["timetable"],
            actor="admin:head@hilltop.example",
            now=clock.now(),
        )
        ends_at = clock.now() + timedelta(days=7)
        service.revoke(
            view.consent.id,
            school_id=school.id,
            end_at=ends_at,
            actor="admin:head@hilltop.example",
            now=clock.now(),
        )
    assert run_fan_out(resources, clock) == 2
    run_deliver(resources, clock, http)
    seen = receiver.for_key("ExamPro")
    assert [r.payload["type"] for r in seen] == ["consent.granted", "consent.revoked"]
    revoked = seen[1].payload["data"]
    assert revoked["ends_at"] == rfc3339(ends_at)
    assert revoked["school_id"] == school.id
    assert "head@hilltop.example" not in str([r.body for r in seen]), "admins stay private"


# -- the partner's view -----------------------------------------------------------------


def test_deliveries_are_listed_newest_first_a_page_at_a_time(
    resources: Resources, clock: FrozenClock
) -> None:
    mine = add_partner(resources, clock, "Mine", "https://mine.example/hook", None).partner.id
    theirs = add_partner(resources, clock, "Theirs", "https://theirs.example/", None).partner.id
    for step in (0, 1, 1, 0, 2):  # two pairs created at one instant: ties broken by id
        clock.advance(timedelta(seconds=step))
        emit_consent(resources, clock, mine)
        emit_consent(resources, clock, theirs)
        run_fan_out(resources, clock)
    expected = sorted(
        (d for d in deliveries(resources) if d.partner_id == mine),
        key=lambda d: (d.created_at, d.id),
        reverse=True,
    )
    pages: list[list[str]] = []
    cursor = None
    with Session(resources.engine) as session:
        while True:
            page = list_deliveries(session, mine, limit=2, cursor=cursor)
            pages.append([d.id for d in page.items])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [i for p in pages for i in p] == [d.id for d in expected]
        assert list_deliveries(session, mine, status=DeliveryStatus.FAILED).items == []
        pending = list_deliveries(session, mine, status=DeliveryStatus.PENDING, limit=10)
        assert len(pending.items) == 5
        assert pending.next_cursor is None
        with pytest.raises(InvalidDeliveryCursorError):
            list_deliveries(session, mine, cursor="not-a-cursor")


def test_redelivery_requeues_with_a_fresh_window_for_its_partner_only(
    resources: Resources, clock: FrozenClock, receiver: Receiver, http: httpx.Client
) -> None:
    partner = hooked(resources, clock, receiver, script=[410, 204])
    stranger = add_partner(resources, clock, "Stranger", "https://stranger.example/", None)
    emit_consent(resources, clock, partner.partner.id)
    run_fan_out(resources, clock)
    assert run_deliver(resources, clock, http) == [DeliveryStatus.FAILED]
    failed = only_delivery(resources)
    clock.advance(timedelta(days=3))
    with session_scope(resources.engine) as session:
        with pytest.raises(DeliveryNotFoundError):
            redeliver(session, stranger.partner.id, failed.id, clock.now())
        again = redeliver(session, partner.partner.id, failed.id, clock.now())
        assert (again.status, again.attempts) == (DeliveryStatus.PENDING, 0)
        assert (again.next_attempt_at, again.expires_at) == (
            clock.now(),
            clock.now() + timedelta(hours=24),
        )
    assert run_deliver(resources, clock, http) == [DeliveryStatus.DELIVERED]
    seen = receiver.for_key("ExamPro")
    assert [r.headers["webhook-id"] for r in seen] == [failed.id, failed.id]
    assert [r.error for r in seen] == [None, None]


# -- logs and the Celery wiring ---------------------------------------------------------


def test_logs_hold_no_secret_and_no_payload(
    sqlite_resources: Resources,
    clock: FrozenClock,
    receiver: Receiver,
    http: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    partner = hooked(sqlite_resources, clock, receiver, script=[500, 410])
    caplog.set_level(logging.DEBUG)
    emit_consent(sqlite_resources, clock, partner.partner.id, marker="payload-marker-7f3a")
    run_fan_out(sqlite_resources, clock)
    run_deliver(sqlite_resources, clock, http)
    clock.advance(timedelta(seconds=5))
    run_deliver(sqlite_resources, clock, http)
    delivery = only_delivery(sqlite_resources)
    assert delivery.status is DeliveryStatus.FAILED
    signatures = [r.headers["webhook-signature"] for r in receiver.for_key("ExamPro")]
    assert delivery.id in caplog.text, "the logs do name the delivery"
    for secret in (
        partner.webhook_secret,
        partner.webhook_secret.removeprefix("whsec_"),
        "payload-marker-7f3a",
        SCHOOL,
        *signatures,
    ):
        assert secret not in caplog.text


def test_celery_tasks_fan_out_and_deliver(
    resources: Resources,
    clock: FrozenClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker.worker, "_resources", resources)
    monkeypatch.setenv("MISBROKER_WEBHOOK_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("MISBROKER_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    partner = hooked(resources, clock, receiver, script=[500, 204])
    emit_consent(resources, clock, partner.partner.id)
    assert fan_out_task.name == "webhooks.fan_out"
    assert deliver_due_task.name == "webhooks.deliver_due"
    assert fan_out_task() == 1
    assert deliver_due_task() == 1
    clock.advance(timedelta(seconds=6))  # beyond the 5 s step with the default jitter
    assert deliver_due_task() == 1
    assert only_delivery(resources).status is DeliveryStatus.DELIVERED
    assert [r.error for r in receiver.for_key("ExamPro")] == [None, None]
