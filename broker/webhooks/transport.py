"""The HTTP client of webhook delivery: it connects only to addresses it has just checked.

httpcore asks its network backend to open a TCP connection to the URL's host.  The backend
here resolves that host itself, checks every address against the `UrlPolicy`, and connects
to a checked address.  TLS still runs over that socket with the original name (SNI and
certificate verification), and the Host header is untouched, so the partner sees an
ordinary request; a name that re-resolves to another address after the check is never
asked again.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx
from httpcore import SOCKET_OPTION, NetworkBackend, NetworkStream, SyncBackend

from broker.webhooks.addresses import (
    Resolver,
    UrlPolicy,
    WebhookUrlError,
    check_scheme,
    checked_addresses,
)


class PinnedBackend(NetworkBackend):
    """Resolve, check every address, then connect to the first checked one that answers."""

    def __init__(
        self,
        policy: UrlPolicy,
        resolve: Resolver | None = None,
        inner: NetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolve = resolve
        self.inner = inner or SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> NetworkStream:
        try:
            addresses = checked_addresses(host, port, self.policy, self.resolve)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve the webhook host: {exc}") from exc
        last: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> NetworkStream:
        raise WebhookUrlError("webhooks never go to a Unix socket")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's own transport, with its connection pool on a `PinnedBackend` and no proxy."""

    def __init__(
        self,
        policy: UrlPolicy,
        resolve: Resolver | None = None,
        inner: NetworkBackend | None = None,
    ) -> None:
        super().__init__(trust_env=False)
        self.policy = policy
        # httpx builds its pool without a backend option; this one differs only in the backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=10,
            max_keepalive_connections=5,
            network_backend=PinnedBackend(policy, resolve, inner),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        check_scheme(request.url.scheme, request.url.host, self.policy)
        return super().handle_request(request)


def webhook_client(
    policy: UrlPolicy, resolve: Resolver | None = None, inner: NetworkBackend | None = None
) -> httpx.Client:
    """A client for delivery: pinned addresses, no proxy from the environment, no redirects."""
    return httpx.Client(
        transport=PinnedTransport(policy, resolve, inner),
        trust_env=False,
        follow_redirects=False,
    )
