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


@pytest.mark.parametrize(
    "items", [30 * 1000 * 1000, 100 * 1000 * 1000], ids=["60MB-inflated", "200MB-inflated"]
)
def test_a_gzip_bomb_upload_is_refused_with_memory_bounded(
    broker: LiveBroker, school: tuple[Path, str], items: int
) -> None:
    bomb = _bomb(items)
    assert len(bomb) < 400 * 1024  # small compressed, huge inflated
    memory = _memory(broker)
    before = memory.rss()
    status = _post(
        broker,
        "/v1/agent/uploads",
        {
            "Authorization": f"Bearer {school[1]}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Content-Length": str(len(bomb)),
        },
        iter([bomb]),
    )
    assert status == 413
    grown_peak, grown_after = memory.peak() - before, memory.rss() - before
    print(f"bomb {items} items: peak +{grown_peak / MB:.0f} MB, after +{grown_after / MB:.0f} MB")
    assert grown_peak < BOMB_GROWTH_BOUND
    assert grown_after < BOMB_GROWTH_BOUND
    assert broker.healthy()
