"""Floods against a real API process (uvicorn in a subprocess): its memory stays bounded.

Memory is the process's resident set, read with psutil before and after, and its peak
during the request (`VmHWM`, reset through `/proc/PID/clear_refs` just before).  The
bounds are on memory and status codes, never on time.
"""

from __future__ import annotations

import gzip
import io
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.agents.agent_broker import LiveBroker, add_school, live_broker

MB = 1024 * 1024
# A 200 MB body refused from its headers: the API reads none of it.
FLOOD_GROWTH_BOUND = 16 * MB
# A bomb is inflated into one buffer up to the 64 MB limit (plus a 1 MB piece) and its
# values counted on the bytes; a bomb under the limit is refused by that count, unparsed.
BOMB_GROWTH_BOUND = 96 * MB


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("edge") / "data"
    _, agent_key = add_school(data_dir, redis_url, "Flooded Academy", "3830001")
    return data_dir, agent_key


@pytest.fixture(scope="module")
def broker(school: tuple[Path, str], redis_url: str) -> Iterator[LiveBroker]:
    with live_broker(school[0], redis_url) as running:
        yield running


class Memory:
    """RSS of the API process now, and its peak since `reset`."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


def _memory(broker: LiveBroker) -> Memory:
    assert broker.proc is not None
    memory = Memory(broker.proc.pid)
    memory.reset_peak()
    return memory


def _post(broker: LiveBroker, path: str, headers: dict[str, str], body: Iterator[bytes]) -> int:
    """Send the request from a thread and read the answer as soon as it comes: its status."""
    sock = socket.create_connection(("127.0.0.1", broker.port))
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    sent = threading.Event()

    def writer() -> None:
        try:
            sock.sendall(head.encode() + b"\r\n")
            for chunk in body:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: what we want
        finally:
            sent.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    answer = b""
    try:
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
        thread.join(timeout=60)
    return int(answer.split(b" ", 2)[1])


def test_a_200_mb_body_without_credentials_is_refused_unread(broker: LiveBroker) -> None:
    memory = _memory(broker)
    before = memory.rss()
    size = 200 * 1000 * 1000
    chunk = b"[" + b"1," * (MB // 2)

    def body() -> Iterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk

    status = _post(
        broker,
        "/v1/agent/heartbeat",
        {"Content-Type": "application/json", "Content-Length": str(size)},
        body(),
    )
    assert status == 413
    grown_peak, grown_after = memory.peak() - before, memory.rss() - before
    print(f"200 MB flood: peak +{grown_peak / MB:.1f} MB, after +{grown_after / MB:.1f} MB")
    assert grown_peak < FLOOD_GROWTH_BOUND
    assert grown_after < FLOOD_GROWTH_BOUND
    assert broker.healthy()


def test_a_chunked_flood_without_credentials_stops_at_the_limit(broker: LiveBroker) -> None:
    memory = _memory(broker)
    before = memory.rss()
    piece = b"1," * 32768

    def body() -> Iterator[bytes]:
        for _ in range(3000):  # ~200 MB if it were all read
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
        yield b"0\r\n\r\n"

    status = _post(
        broker,
        "/v1/agent/heartbeat",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        body(),
    )
    assert status == 413
    assert memory.peak() - before < FLOOD_GROWTH_BOUND
    assert broker.healthy()


def _bomb(items: int) -> bytes:
    """An upload of `items` ones (2 bytes each inflated), gzipped a megabyte at a time."""
    extracted = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    head = orjson.dumps(
        {
            "batch_id": str(uuid.uuid4()),
            "area": "students.basic",
            "mode": "delta",
            "extracted_at": extracted,
        }
    )[:-1]
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(head + b',"records":[')
        block = b"1," * MB
        for _ in range(items // MB):
            gz.write(block)
        gz.write(b"1]}")
    return out.getvalue()


@pytest.mark.parametrize("path", ["/v1/agent/uploads", "/v1/agent/uploads/sequence"])
@pytest.mark.parametrize(
    "items", [30 * 1000 * 1000, 100 * 1000 * 1000], ids=["60MB-inflated", "200MB-inflated"]
)
def test_a_gzip_bomb_upload_is_refused_with_memory_bounded(
    broker: LiveBroker, school: tuple[Path, str], items: int, path: str
) -> None:
    bomb = _bomb(items)
    assert len(bomb) < 400 * 1024  # small compressed, huge inflated
    memory = _memory(broker)
    before = memory.rss()
    status = _post(
        broker,
        path,
        {
            "Authorization": f"Bearer {school[1]}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Content-Length": str(len(bomb)),
        },
        iter([bomb]),
    )
    inflates_past_limit = items * 2 > broker.settings().broker.upload_max_bytes
    # Under the byte limit, the upload is refused for its values: alone with 413, in a
    # sequence by its result in a 200 answer.  Either way, memory stays bounded.
    assert status == (413 if inflates_past_limit or path.endswith("uploads") else 200)
    grown_peak, grown_after = memory.peak() - before, memory.rss() - before
    print(f"bomb {items} items: peak +{grown_peak / MB:.0f} MB, after +{grown_after / MB:.0f} MB")
    assert grown_peak < BOMB_GROWTH_BOUND
    assert grown_after < BOMB_GROWTH_BOUND
    assert broker.healthy()


# Each argon2 verification holds 64 MiB while it runs; the gate allows one per core.
ARGON2_MEMORY = 64 * MB
LOGIN_FLOOD = 64


@pytest.fixture(scope="module")
def login_broker(school: tuple[Path, str], redis_url: str) -> Iterator[LiveBroker]:
    """The same school's broker with the per-IP limit out of the way, so every login of the
    flood reaches the hash gate (all of them come from 127.0.0.1)."""
    with live_broker(
        school[0],
        redis_url,
        MISBROKER_ADMIN_LOGIN_PER_IP_PER_MINUTE="100000",
        MISBROKER_ADMIN_LOGIN_PER_ACCOUNT_PER_MINUTE="100000",
    ) as running:
        yield running


def test_a_login_flood_keeps_memory_to_the_hash_slots_and_healthz_answering(
    login_broker: LiveBroker,
) -> None:
    """64 concurrent logins for unknown emails: at most one argon2 hash per core at once, so
    memory grows by the slots' hashes, not the flood's; the rest are told 503 Retry-After."""
    assert login_broker.proc is not None
    slots = len(psutil.Process(login_broker.proc.pid).cpu_affinity() or [0])
    memory = _memory(login_broker)
    before = memory.rss()
    statuses: list[int] = []
    healthz_during: list[int] = []
    started = threading.Barrier(LOGIN_FLOOD + 1)

    def login(n: int) -> None:
        with httpx.Client(base_url=login_broker.url, timeout=120) as client:
            started.wait()
            answer = client.post(
                "/v1/admin/login",
                json={"email": f"nobody{n}@flood.test", "password": "x" * 12, "totp": "000000"},
            )
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=login, args=(n,)) for n in range(LOGIN_FLOOD)]
    for thread in threads:
        thread.start()
    started.wait()
    with httpx.Client(base_url=login_broker.url, timeout=120) as client:
        # Asked while the flood is still being answered: liveness must not queue behind it.
        healthz_during.append(client.get("/healthz").status_code)
    for thread in threads:
        thread.join(timeout=300)
    grown_peak, grown_after = memory.peak() - before, memory.rss() - before
    refused = sum(1 for s in statuses if s == 503)
    print(
        f"login flood of {LOGIN_FLOOD} on {slots} hash slots: peak +{grown_peak / MB:.0f} MB, "
        f"after +{grown_after / MB:.0f} MB, {refused} answered 503"
    )
    assert len(statuses) == LOGIN_FLOOD
    assert set(statuses) <= {401, 503}, statuses
    assert healthz_during == [200]
    bound = slots * ARGON2_MEMORY + 48 * MB
    assert grown_peak < bound
    assert grown_after < bound
    assert login_broker.healthy()


def test_a_body_a_little_over_the_limit_gets_its_413_and_keeps_the_connection(
    broker: LiveBroker,
) -> None:
    """httpx writes the whole body before reading: the excess is drained, so it reads a
    problem (not a reset), and the connection stays usable."""
    body = b'{"email": "' + b"a" * (300 * 1024) + b'"}'
    with httpx.Client(base_url=broker.url, timeout=60) as client:
        answer = client.post(
            "/v1/admin/login", content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["limit_bytes"] == 65536
        assert answer.headers.get("connection") != "close"
        assert client.get("/healthz").status_code == 200
