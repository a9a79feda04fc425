"""The broker serving TLS itself (`python -m broker.serve` as a real process, a real client).

TLS 1.0 and 1.1 are refused in the broker's handshake, which a client able to speak them
(OpenSSL security level 0) proves against a control server that accepts them; TLS 1.3 is
negotiated; 1.2 is the floor.  Bad certificate or key paths: one line and exit 2.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from agents.config import parse_config
from agents.mis.synthetic import SyntheticMis
from agents.runner import Agent
from agents.state import AgentState
from tests.agents.agent_broker import (
    ROOT,
    LiveBroker,
    add_school,
    broker_env,
    broker_records,
    live_broker,
)
from tests.support.servers import free_port, wait_until
from tests.support.terminal import Terminal
from tests.support.tls import self_signed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("pem"))


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, pem: tuple[Path, Path]
) -> Iterator[LiveBroker]:
    data_dir = tmp_path_factory.mktemp("tls-broker")
    add_school(data_dir, redis_url, "Tls Academy", "3830001")  # creates the database
    with live_broker(
        data_dir,
        redis_url,
        MISBROKER_TLS_CERT_FILE=str(pem[0]),
        MISBROKER_TLS_KEY_FILE=str(pem[1]),
    ) as running:
        yield running


def _old_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers only `version`, even one OpenSSL's defaults no longer allow."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


@pytest.fixture(scope="module")
def permissive_server(pem: tuple[Path, Path]) -> Iterator[int]:
    """A control that accepts TLS 1.0 up: shows the old clients really offer what they say."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.load_cert_chain(*pem)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused_by_the_broker(
    broker: LiveBroker, permissive_server: int, version: ssl.TLSVersion
) -> None:
    client = _old_client(version)
    assert _handshake(permissive_server, client) in ("TLSv1", "TLSv1.1")
    # uvicorn's event loop drops a failed handshake without flushing OpenSSL's alert, so the
    # client sees the connection end (or, with another loop, the protocol-version alert).
    with pytest.raises(ssl.SSLError, match=r"alert protocol version|EOF"):
        _handshake(broker.port, client)
    assert broker.healthy()  # refused, not crashed


def test_tls_1_3_is_negotiated_and_the_api_answers_with_hsts(
    broker: LiveBroker, pem: tuple[Path, Path]
) -> None:
    trusted = ssl.create_default_context(cafile=pem[0])
    assert _handshake(broker.port, trusted) == "TLSv1.3"
    response = httpx.get(f"{broker.url}/healthz", verify=trusted, timeout=30)
    assert response.status_code == 200
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_tls_1_2_is_the_floor_and_still_accepted(
    broker: LiveBroker, pem: tuple[Path, Path]
) -> None:
    client = ssl.create_default_context(cafile=pem[0])
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(broker.port, client) == "TLSv1.2"


def test_plain_http_gets_no_answer_on_the_tls_port(broker: LiveBroker) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{broker.port}/healthz", timeout=30)


def _serve(tmp_path: Path, redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env=broker_env(tmp_path, redis_url, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _up(tmp_path: Path, redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(tmp_path / "data"), "up"]
    return subprocess.run(
        [*argv, "--port", str(free_port())],
        cwd=ROOT,
        env=broker_env(tmp_path / "data", redis_url, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("run", [_serve, _up], ids=["api", "up"])
def test_a_missing_certificate_is_one_line_and_exit_2(
    tmp_path: Path, redis_url: str, pem: tuple[Path, Path], run: object
) -> None:
    assert callable(run)
    done = run(
        tmp_path,
        redis_url,
        MISBROKER_TLS_CERT_FILE=str(tmp_path / "missing.pem"),
        MISBROKER_TLS_KEY_FILE=str(pem[1]),
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "MISBROKER_TLS_CERT_FILE" in lines[0]
    assert "missing.pem" in lines[0]


def test_a_key_that_is_not_the_certificates_is_one_line_and_exit_2(
    tmp_path: Path, redis_url: str, pem: tuple[Path, Path]
) -> None:
    _, other_key = self_signed(tmp_path)
    done = _up(
        tmp_path,
        redis_url,
        MISBROKER_TLS_CERT_FILE=str(pem[0]),
        MISBROKER_TLS_KEY_FILE=str(other_key),
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "private key" in lines[0]
    assert not (tmp_path / "data" / "misbroker.db").exists()


def test_a_real_agent_uploads_over_https_with_the_ca_pinned(
    tmp_path: Path, broker: LiveBroker, pem: tuple[Path, Path]
) -> None:
    school_id, key = add_school(broker.data_dir, broker.redis_url, "Pinned Academy", "3830002")
    mis = SyntheticMis(seed=7, pupils=40, phase="primary", day=date(2025, 11, 19))
    document = {
        "broker_url": broker.url,  # https://127.0.0.1:port
        "agent_key": key,
        "state_dir": str(tmp_path / "agent-state"),
        "mis": {"adapter": "synthetic"},
        "tls": {"ca_file": str(pem[0])},
        "upload": {"retry_budget_seconds": 60, "retry_cap_seconds": 2},
    }
    config = parse_config(document, tmp_path)
    agent = Agent(config, mis, AgentState.open(config.state_dir))
    assert agent.extract("students.basic").records == 40
    assert agent.flush().clean
    assert agent.state.pending() == [], broker.log_tail()
    held = broker_records(broker.settings(), school_id, "students.basic")
    assert held.keys() == {r["id"] for r in mis.extract("students.basic")}


def test_up_serves_https_and_says_so(tmp_path: Path, pem: tuple[Path, Path]) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}
    env.update(MISBROKER_TLS_CERT_FILE=str(pem[0]), MISBROKER_TLS_KEY_FILE=str(pem[1]))
    argv = [sys.executable, "-m", "broker.cli.main", "--data-dir", str(tmp_path / "data")]
    trusted = ssl.create_default_context(cafile=pem[0])

    def ready() -> bool:
        try:
            url = f"https://127.0.0.1:{port}/readyz"
            return httpx.get(url, verify=trusted, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with (tmp_path / "up.log").open("wb") as log:
        proc = subprocess.Popen(
            [*argv, "up", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        assert wait_until(lambda: ready() or proc.poll() is not None, 120)
        assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
        # The API answers before `up` has seen every process start and says so: wait for
        # the line, not for the API alone, before stopping it.
        said = f"misbroker is up at https://127.0.0.1:{port}"
        up_log = tmp_path / "up.log"
        assert wait_until(lambda: said in up_log.read_text() or proc.poll() is not None, 120)
        assert _handshake(port, trusted) == "TLSv1.3"
        health = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusted, timeout=30)
        assert "strict-transport-security" in health.headers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert f"misbroker is up at https://127.0.0.1:{port}" in (tmp_path / "up.log").read_text()


def _agent_config(tmp_path: Path, broker: LiveBroker, key: str, ca: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'broker_url = "{broker.url}"\n'
        f'agent_key = "{key}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[tls]\nca_file = "{ca}"\n'
        '[mis]\nadapter = "synthetic"\npupils = 60\nphase = "primary"\nday = "2025-11-19"\n'
    )
    return config


def test_the_agent_cli_over_https_draws_bars_on_a_terminal_only(
    tmp_path: Path, broker: LiveBroker, pem: tuple[Path, Path]
) -> None:
    _, key = add_school(broker.data_dir, broker.redis_url, "Barred Academy", "3830004")
    config = _agent_config(tmp_path, broker, key, pem[0])
    argv = [sys.executable, "-m", "agents", "--config", str(config), "extract"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISBROKER_")}

    terminal = Terminal()
    proc = subprocess.Popen(
        [*argv, "students.basic", "staff.basic", "--full"],
        cwd=ROOT,
        env=env,
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
    )
    try:
        assert proc.wait(300) == 0, terminal.text[-3000:]
    finally:
        terminal.close()
    assert "extract:" in terminal.text
    assert "upload:" in terminal.text

    piped = subprocess.run(
        [*argv, "groups", "--full"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "extract:" not in piped.stderr
    assert "upload:" not in piped.stderr
    assert "\r" not in piped.stderr
