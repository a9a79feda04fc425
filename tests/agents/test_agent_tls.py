"""TLS for real: the agent verifies the broker's certificate and speaks TLS 1.2+ (1.3 here)."""

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents.config import tls_context
from agents.uploader import BrokerClient, BrokerError
from tests.support.tls import self_signed

VERSIONS: list[str] = []


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        VERSIONS.append(self.connection.version())
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(cert: Path, key: Path, maximum: ssl.TLSVersion) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = maximum
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def pem(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


@pytest.fixture
def broker_url(pem: tuple[Path, Path]) -> Iterator[str]:
    yield from serve(*pem, ssl.TLSVersion.MAXIMUM_SUPPORTED)


def test_a_trusted_certificate_connects_over_tls_1_3(
    broker_url: str, pem: tuple[Path, Path]
) -> None:
    VERSIONS.clear()
    client = BrokerClient(broker_url, "k", tls=tls_context(pem[0]), timeout=5)
    assert client.healthz() == {"status": "ok"}
    assert VERSIONS == ["TLSv1.3"]


def test_an_untrusted_certificate_is_refused(broker_url: str) -> None:
    client = BrokerClient(broker_url, "k", tls=tls_context(None), timeout=5)
    with pytest.raises(BrokerError, match="ConnectError"):
        client.healthz()


def test_tls_1_2_is_the_floor_and_still_accepted(pem: tuple[Path, Path]) -> None:
    # Below 1.2 is refused by `minimum_version` (test_agent_config); this OpenSSL cannot
    # even offer TLS 1.1, so a server limited to 1.2 is the oldest one worth connecting to.
    VERSIONS.clear()
    for url in serve(*pem, ssl.TLSVersion.TLSv1_2):
        client = BrokerClient(url, "k", tls=tls_context(pem[0]), timeout=5)
        assert client.healthz() == {"status": "ok"}
    assert VERSIONS == ["TLSv1.2"]
