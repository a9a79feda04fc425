"""A gate between an agent and the real broker, so a fault lands at a known point of progress.

Tests that kill an agent (or stop the broker) in the middle of an upload must not depend on
how fast the machine is: a kill on a timer hits a different batch, or none, on a loaded CI
machine.  The gate forwards every request to the broker unchanged, counts the uploads the
broker has answered, and closes after a given count: the next upload is held (before it
reaches the broker, or after the broker applied it but before the agent hears the answer)
and the test is told.  The test then acts (kill -9 the agent, stop the broker) and reopens
the gate; a held request is then dropped without an answer, as a dead link would drop it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

UPLOAD_PATH = "/v1/agent/uploads"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Hold(StrEnum):
    BEFORE_BROKER = "before"  # the broker never sees the held upload
    AFTER_BROKER = "after"  # the broker applied it; its answer is lost


class _Dropped(Exception):
    """The held request is dropped: the agent sees its connection close with no answer."""


@dataclass
class UploadGate:
    upstream: str
    answered: int = 0  # uploads the broker answered and the gate passed on
    _limit: int | None = None
    _hold: Hold = Hold.BEFORE_BROKER
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _held: int = 0  # uploads held since the gate last closed
    _opened: int = 0  # how often the gate was reopened: a held request waits for the next
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close_after(self, uploads: int, hold: Hold = Hold.BEFORE_BROKER) -> None:
        """Pass `uploads` more answered uploads, then hold every upload that follows."""
        with self._lock:
            self._limit = self.answered + uploads
            self._hold = hold
            self._held = 0

    def wait_holding(self, timeout: float = 180.0) -> None:
        """Block until an upload is held at the gate (the agent is mid-upload)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._held > 0, timeout):
                raise AssertionError(f"no upload reached the gate ({self.answered} passed)")

    def reopen(self) -> None:
        """Drop whatever is held and let everything through from now on."""
        with self._lock:
            self._limit = None
            self._opened += 1
            self._lock.notify_all()

    # --- the proxy side -------------------------------------------------------------------

    def _closed(self) -> bool:
        return self._limit is not None and self.answered >= self._limit

    def _wait_until_reopened(self) -> None:
        with self._lock:
            opened = self._opened
            self._held += 1
            self._lock.notify_all()
            self._lock.wait_for(lambda: self._opened != opened)
        raise _Dropped

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> httpx.Response:
        is_upload = method == "POST" and path.startswith(UPLOAD_PATH)
        with self._lock:
            held = is_upload and self._closed()
            hold = self._hold
        if held and hold is Hold.BEFORE_BROKER:
            self._wait_until_reopened()
        try:
            with httpx.Client(base_url=self.upstream, timeout=120, trust_env=False) as client:
                response = client.request(method, path, headers=headers, content=body)
        except httpx.TransportError:
            raise _Dropped from None  # the broker is down: so is the agent's connection
        if held:
            self._wait_until_reopened()
        if is_upload:
            with self._lock:
                self.answered += 1
                self._lock.notify_all()
        return response


def _handler(gate: UploadGate) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            try:
                response = gate.forward(self.command, self.path, headers, body)
            except _Dropped:
                self.close_connection = True
                return
            self.send_response(response.status_code)
            for name, value in response.headers.multi_items():
                if name.lower() not in _HOP_BY_HOP | {"content-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def upload_gate(upstream: str) -> Iterator[UploadGate]:
    gate = UploadGate(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(gate))
    server.daemon_threads = True
    gate._server = server
    thread = threading.Thread(target=server.serve_forever, name="upload-gate", daemon=True)
    thread.start()
    try:
        yield gate
    finally:
        gate.reopen()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
