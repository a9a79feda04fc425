"""The agent's HTTP side: uploads, heartbeats and command results, over verified TLS.

`BrokerClient.upload` never raises for an HTTP or network failure: it classifies the answer
(`Outcome`) so the spool can decide to confirm, drop, park or retry a batch.  The transport
is a port: tests pass `httpx.MockTransport` for the broker's odd answers.
"""

from __future__ import annotations

import enum
import gzip
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson

from agents import __version__

USER_AGENT: Final = f"misbroker-agent/{__version__}"
UPLOAD_PATH: Final = "/v1/agent/uploads"
SEQUENCE_PATH: Final = f"{UPLOAD_PATH}/sequence"
SEQUENCE_MEDIA_TYPE: Final = "application/x-ndjson"
# The newline between two uploads of a sequence, as a gzip member of its own (mtime 0: the
# same bytes every time).
_NEWLINE_GZ: Final = gzip.compress(b"\n", mtime=0)
_MAX_DETAIL: Final = 500


class Outcome(enum.Enum):
    CONFIRMED = "confirmed"  # 200: applied now or earlier (idempotent replay)
    SUPERSEDED = "superseded"  # 409 stale-upload: newer data is already cached
    REFUSED = "refused"  # any other 4xx, or a batch_id reused with other content
    RETRY = "retry"  # 5xx, 429, network: try again later
    UNAUTHORISED = "unauthorised"  # 401/403: the key or school; retry later, never drop


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    status: int | None
    detail: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SequenceSent:
    """The answer to a sequence: a result for each batch the broker tried, in order (the
    rest were not tried), or `failed`, the request's own failure (none was answered)."""

    results: list[SendResult]
    failed: SendResult | None = None


class BrokerError(Exception):
    """A heartbeat or result report failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429


class BrokerClient:
    """One broker, one agent key; `reconnect` drops every pooled connection."""

    def __init__(
        self,
        base_url: str,
        agent_key: str,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base_url = base_url
        self._key = agent_key
        self._tls = tls
        self._timeout = timeout
        self._transport = transport
        self._client = self._build()

    def _build(self) -> httpx.Client:
        return httpx.Client(
            base_url=self._base_url,
            headers={"Authorization": f"Bearer {self._key}", "User-Agent": USER_AGENT},
            timeout=httpx.Timeout(self._timeout, connect=min(10.0, self._timeout)),
            verify=self._tls if self._tls is not None else True,
            transport=self._transport,
            follow_redirects=False,  # a redirect could carry the key elsewhere
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"BrokerClient({self._base_url!r})"

    def reconnect(self) -> None:
        self._client.close()
        self._client = self._build()

    def close(self) -> None:
        self._client.close()

    def upload(self, body_gz: bytes) -> SendResult:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        try:
            response = self._client.post(UPLOAD_PATH, content=body_gz, headers=headers)
        except httpx.TransportError as exc:
            return SendResult(Outcome.RETRY, None, _network(exc))
        return classify(response)

    def upload_sequence(self, bodies_gz: Sequence[bytes]) -> SequenceSent:
        """Several spooled batches in one request, each body as it was spooled.

        The gzip members go one after the other with a newline's member between them: the
        broker inflates them to one upload a line, each line the bytes of its batch alone.
        """
        headers = {"Content-Type": SEQUENCE_MEDIA_TYPE, "Content-Encoding": "gzip"}
        try:
            response = self._client.post(
                SEQUENCE_PATH, content=_NEWLINE_GZ.join(bodies_gz), headers=headers
            )
        except httpx.TransportError as exc:
            return SequenceSent([], SendResult(Outcome.RETRY, None, _network(exc)))
        if response.status_code != 200:
            return SequenceSent([], classify(response))
        results = _sequence_results(_problem(response), len(bodies_gz))
        if results is None:  # applied or not, we cannot tell: each is sent again alone
            return SequenceSent(
                [], SendResult(Outcome.RETRY, 200, "HTTP 200: not a sequence answer")
            )
        return SequenceSent(results)

    def heartbeat(self, telemetry: dict[str, Any]) -> dict[str, Any]:
        return self._post_json("/v1/agent/heartbeat", telemetry)

    def report(self, command_id: str, status: str, detail: str | None) -> None:
        self._post_json(
            f"/v1/agent/commands/{command_id}/result", {"status": status, "detail": detail}
        )

    def fetch_write(self, write_id: str) -> dict[str, Any]:
        """A write's records (the broker opens the sealed payload for us), over HTTPS."""
        try:
            response = self._client.get(f"/v1/agent/writes/{write_id}")
        except httpx.TransportError as exc:
            raise BrokerError(_network(exc)) from None
        return _json_or_raise(response)

    def report_write(self, write_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        return self._post_json(f"/v1/agent/writes/{write_id}/results", {"results": results})

    def healthz(self) -> dict[str, Any]:
        try:
            response = self._client.get("/healthz")
        except httpx.TransportError as exc:
            raise BrokerError(_network(exc)) from None
        return _json_or_raise(response)

    def _post_json(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post(
                path, content=orjson.dumps(payload), headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            raise BrokerError(_network(exc)) from None
        return _json_or_raise(response)


def classify(response: httpx.Response) -> SendResult:
    return _classify(response.status_code, _problem(response))


def _classify(status: int, problem: dict[str, Any] | None) -> SendResult:
    detail = _describe(status, problem)
    if status == 200:
        return SendResult(Outcome.CONFIRMED, status, detail, problem)
    if status == 409:
        kind = str(problem.get("type", "")) if problem else ""
        if kind.endswith("stale-upload"):
            return SendResult(Outcome.SUPERSEDED, status, detail, problem)
        return SendResult(Outcome.REFUSED, status, detail, problem)
    if status in (401, 403):
        return SendResult(Outcome.UNAUTHORISED, status, detail, problem)
    if status == 429 or status >= 500 or status in (408, 425):
        return SendResult(Outcome.RETRY, status, detail, problem)
    return SendResult(Outcome.REFUSED, status, detail, problem)


def _sequence_results(answer: dict[str, Any] | None, sent: int) -> list[SendResult] | None:
    """One result for each upload the broker tried, in order; None if the answer is not one.

    Only the last may be a refusal: the first refusal ends the sequence.
    """
    items = answer.get("results") if answer is not None else None
    if not isinstance(items, list) or not 0 < len(items) <= sent:
        return None
    results = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or item.get("index") != index:
            return None
        status = item.get("status")
        body = item.get("answer") if status == 200 else item.get("problem")
        if isinstance(status, bool) or not isinstance(status, int) or not isinstance(body, dict):
            return None
        results.append(_classify(status, body))
    if any(r.outcome is not Outcome.CONFIRMED for r in results[:-1]):
        return None
    return results


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    try:
        loaded = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _describe(status: int, problem: dict[str, Any] | None) -> str:
    if problem is None:
        return f"HTTP {status}"
    text = problem.get("detail") or problem.get("title") or ""
    return f"HTTP {status}: {str(text)[:_MAX_DETAIL]}" if text else f"HTTP {status}"


def _json_or_raise(response: httpx.Response) -> dict[str, Any]:
    body = _problem(response)
    if response.status_code >= 400:
        raise BrokerError(_describe(response.status_code, body), status=response.status_code)
    if body is None:
        raise BrokerError(f"HTTP {response.status_code}: not a JSON object", status=None)
    return body


def _network(exc: httpx.TransportError) -> str:
    # The class name says what failed (ConnectError, ReadTimeout...); the message may be long.
    return f"network: {type(exc).__name__}: {str(exc)[:200]}"
