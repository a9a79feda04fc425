"""Webhook URLs reach public HTTPS hosts only, checked at registration and again at delivery.

No test here sends traffic beyond 127.0.0.1: names resolve through a fake resolver, and
the network backend under the pinning one is a spy that records where it was asked to go.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

import pytest
from httpcore import SOCKET_OPTION, NetworkStream, SyncBackend

from broker.clock import FrozenClock
from broker.db import session_scope
from broker.partners.repository import PartnerRepository
from broker.partners.service import register_partner
from broker.resources import Resources
from broker.settings import Environment
from broker.webhooks import addresses
from broker.webhooks.addresses import UrlPolicy, WebhookUrlError, check_webhook_url, parse_networks
from broker.webhooks.models import DeliveryStatus
from broker.webhooks.settings import WebhookSettings
from broker.webhooks.transport import webhook_client
from tests.broker.test_webhooks import (
    LOCAL,
    Receiver,
    add_partner,
    emit_consent,
    only_delivery,
    receiver,
    run_deliver,
    run_fan_out,
    sqlite_resources,
)

__all__ = ["receiver", "sqlite_resources"]  # fixtures shared with the delivery tests

STRICT = UrlPolicy()  # production's
DEV = UrlPolicy(loopback_http=True)
PUBLIC = "93.184.216.34"  # only ever returned by the fake resolver, never connected to


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The resolver's answers, by name; a name not here does not resolve."""
    names: dict[str, list[str]] = {"localhost": ["127.0.0.1"]}

    def resolve(host: str, _port: int) -> list[str]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return names[host]

    monkeypatch.setattr(addresses, "system_resolver", resolve)
    return names


class SpyStream(NetworkStream):
    def __init__(self, inner: NetworkStream, spy: SpyBackend) -> None:
        self.inner, self.spy = inner, spy

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, timeout)

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):  # type: ignore[no-untyped-def]
        self.spy.tls_names.append(server_hostname)
        return self.inner.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> object:
        return self.inner.get_extra_info(info)


class SpyBackend(SyncBackend):
    """Records every connection asked for, and refuses any address off loopback."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []
        self.tls_names: list[str | None] = []

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> NetworkStream:
        self.connects.append((host, port))
        assert host in ("127.0.0.1", "::1"), "a test must never leave loopback"
        stream = super().connect_tcp(host, port, timeout, local_address, socket_options)
        return SpyStream(stream, self)


@pytest.fixture
def spy() -> SpyBackend:
    return SpyBackend()


# -- registration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/x",
        "https://10.0.0.1/",
        "http://localhost:6379/",
        "http://example.org/",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:10.0.0.1]/",
        "https://[2002:a9fe:a9fe::]/",
        "https://[64:ff9b::a00:1]/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://0.0.0.0/",
        "https://224.0.0.1/",
        "https://100.64.0.1/",
        "https://[fe80::1]/",
        "https://[fc00::1]/",
        "ftp://example.org/",
        "https:///nohost",
        "https://example.org:99999/",
    ],
)
def test_registration_refuses_urls_that_are_not_public_https(
    sqlite_resources: Resources, clock: FrozenClock, dns: dict[str, list[str]], url: str
) -> None:
    dns["example.org"] = [PUBLIC]
    with session_scope(sqlite_resources.engine) as session, pytest.raises(WebhookUrlError):
        register_partner(
            PartnerRepository(session),
            sqlite_resources.sealer,
            name="Sneaky",
            areas=["students.basic"],
            reasons={},
            webhook_url=url,
            now=clock.now(),
        )


def test_registration_accepts_a_public_https_url(dns: dict[str, list[str]]) -> None:
    dns["hooks.partner.example"] = [PUBLIC]
    assert check_webhook_url("https://hooks.partner.example/x", STRICT)
    # Not resolvable now: delivery checks it at each attempt.
    assert check_webhook_url("https://later.partner.example/x", STRICT)


def test_a_name_resolving_to_a_refused_address_is_refused_even_among_good_ones(
    dns: dict[str, list[str]],
) -> None:
    dns["mixed.partner.example"] = [PUBLIC, "10.1.2.3"]
    with pytest.raises(WebhookUrlError):
        check_webhook_url("https://mixed.partner.example/", STRICT)


def test_loopback_http_only_in_development_and_then_only_in_an_allowed_network(
    dns: dict[str, list[str]],
) -> None:
    with pytest.raises(WebhookUrlError, match="https"):
        check_webhook_url("http://127.0.0.1:8000/", STRICT)
    with pytest.raises(WebhookUrlError, match="private"):
        check_webhook_url("http://localhost:6379/", DEV)
    assert check_webhook_url("http://localhost:8000/", LOCAL)
    with pytest.raises(WebhookUrlError, match="https"):
        check_webhook_url("http://hooks.partner.example/", LOCAL)


def test_the_allowlist_admits_a_private_network_but_never_the_metadata_service() -> None:
    policy = UrlPolicy(allowed_networks=parse_networks("10.20.0.0/16, 169.254.0.0/16"))
    assert check_webhook_url("https://10.20.3.4/hook", policy)
    with pytest.raises(WebhookUrlError):
        check_webhook_url("https://10.21.0.1/hook", policy)
    with pytest.raises(WebhookUrlError):
        check_webhook_url("https://169.254.169.254/latest/meta-data/", policy)


def test_the_setting_builds_the_policy_per_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISBROKER_WEBHOOK_ALLOWED_NETWORKS", "10.20.0.0/16,fd12::/48")
    settings = WebhookSettings()
    production = settings.url_policy(Environment.PRODUCTION)
    assert not production.loopback_http
    assert [str(n) for n in production.allowed_networks] == ["10.20.0.0/16", "fd12::/48"]
    assert settings.url_policy(Environment.TEST).loopback_http
    monkeypatch.setenv("MISBROKER_WEBHOOK_ALLOWED_NETWORKS", "10.20.0.0/99")
    with pytest.raises(ValueError, match="allowed_networks"):
        WebhookSettings()


# -- delivery ---------------------------------------------------------------------------


def queue_one(res: Resources, clock: FrozenClock, url: str) -> None:
    partner = add_partner(res, clock, "ExamPro", url, None)
    emit_consent(res, clock, partner.partner.id)
    run_fan_out(res, clock)


def test_delivery_to_a_name_that_now_resolves_privately_is_refused_without_connecting(
    sqlite_resources: Resources, clock: FrozenClock, dns: dict[str, list[str]], spy: SpyBackend
) -> None:
    dns["hooks.partner.example"] = [PUBLIC]
    queue_one(sqlite_resources, clock, "https://hooks.partner.example/hook")
    dns["hooks.partner.example"] = ["10.0.0.7"]  # rebound after registration
    with webhook_client(STRICT, inner=spy) as http:
        assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.PENDING]
    assert spy.connects == []
    assert only_delivery(sqlite_resources).last_error == "refused: address not allowed"


def test_delivery_by_plain_http_is_refused_in_production_without_connecting(
    sqlite_resources: Resources, clock: FrozenClock, dns: dict[str, list[str]], spy: SpyBackend
) -> None:
    queue_one(sqlite_resources, clock, "http://127.0.0.1:9/hook")
    with webhook_client(STRICT, inner=spy) as http:
        assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.PENDING]
    assert spy.connects == []
    assert only_delivery(sqlite_resources).last_error == "refused: address not allowed"


def test_delivery_connects_to_the_checked_address_with_the_original_name_for_tls(
    sqlite_resources: Resources,
    clock: FrozenClock,
    dns: dict[str, list[str]],
    spy: SpyBackend,
    receiver: Receiver,
) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    dns["hooks.partner.example"] = [PUBLIC]
    queue_one(sqlite_resources, clock, f"https://hooks.partner.example:{port}/hook/ExamPro")
    dns["hooks.partner.example"] = ["127.0.0.1"]  # allowed by LOCAL's allowlist
    with webhook_client(LOCAL, inner=spy) as http:
        # The receiver speaks plain HTTP, so the handshake fails; where it went is the point.
        assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.PENDING]
    assert spy.connects == [("127.0.0.1", port)]
    assert spy.tls_names == ["hooks.partner.example"]


def test_delivery_keeps_the_host_header_of_the_url(
    sqlite_resources: Resources,
    clock: FrozenClock,
    dns: dict[str, list[str]],
    spy: SpyBackend,
    receiver: Receiver,
) -> None:
    port = int(receiver.url.rsplit(":", 1)[1])
    partner = add_partner(
        sqlite_resources, clock, "ExamPro", f"http://localhost:{port}/hook/ExamPro", receiver
    )
    emit_consent(sqlite_resources, clock, partner.partner.id)
    run_fan_out(sqlite_resources, clock)
    with webhook_client(LOCAL, inner=spy) as http:
        assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.DELIVERED]
    assert spy.connects == [("127.0.0.1", port)]
    [received] = receiver.for_key("ExamPro")
    assert received.headers["host"] == f"localhost:{port}"
    assert received.error is None


def test_a_host_that_does_not_resolve_is_a_connect_error(
    sqlite_resources: Resources, clock: FrozenClock, dns: dict[str, list[str]], spy: SpyBackend
) -> None:
    queue_one(sqlite_resources, clock, "https://gone.partner.example/hook")
    with webhook_client(STRICT, inner=spy) as http:
        assert run_deliver(sqlite_resources, clock, http) == [DeliveryStatus.PENDING]
    assert spy.connects == []
    assert only_delivery(sqlite_resources).last_error == "request failed: ConnectError"
