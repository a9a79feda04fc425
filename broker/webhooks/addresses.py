"""Where a webhook may go: HTTPS to public addresses, and private networks only when allowed.

A partner's URL is a request the broker makes on the partner's behalf, so it must not
reach the broker's own network (Redis on loopback, the cloud metadata service, a private
admin interface).  The rule is applied twice: at registration, to refuse what is plainly
wrong, and at delivery, where the name is resolved, every address checked, and the
connection made to a checked address (see `broker.webhooks.transport`), so a name that
resolves elsewhere later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from broker.errors import InvalidInputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (host, port) -> its addresses as text; raises OSError when the name does not resolve.
Resolver = Callable[[str, int], Sequence[str]]

# Cloud instance metadata: refused even inside an allowed network, as it hands out credentials.
METADATA: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


MAX_URL_LENGTH = 2000  # the column's size


class WebhookUrlError(InvalidInputError):
    slug = "invalid-webhook-url"
    title = "Webhook URL not allowed"


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """What the environment allows; the default is production's, the strictest."""

    # Plain http to a loopback host (`localhost`, 127.0.0.1, ::1): development and test only.
    loopback_http: bool = False
    # Networks a partner may be on although they are not public (a school's own network).
    allowed_networks: tuple[IPNetwork, ...] = ()

    def refuses(self, address: IPAddress) -> bool:
        address = _embedded_ipv4(address)
        if address in METADATA:
            return True
        if any(address in network for network in self.allowed_networks):
            return False
        # is_global is false for private, loopback, link-local, unique-local, unspecified,
        # reserved and shared (100.64/10) space; multicast can be "global", so it is named.
        return not address.is_global or address.is_multicast


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one reaches (mapped, 6to4, NAT64), which is what is judged."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """A comma list of CIDRs, e.g. `10.20.0.0/16, fd12::/48`; raises ValueError if malformed."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback_host(host: str) -> bool:
    literal = _literal(host)
    return host.lower() == "localhost" or (literal is not None and literal.is_loopback)


def check_scheme(scheme: str, host: str, policy: UrlPolicy) -> None:
    if scheme == "https":
        return
    if scheme == "http" and policy.loopback_http and _is_loopback_host(host):
        return
    raise WebhookUrlError(
        "a webhook URL must use https (plain http only to loopback, in development)"
    )


def checked_addresses(
    host: str, port: int, policy: UrlPolicy, resolve: Resolver | None = None
) -> list[IPAddress]:
    """Every address of `host`, each allowed by `policy`; raises OSError if it does not resolve."""
    literal = _literal(host)
    if literal is None:
        # Looked up at each call, not bound at import, so a test can replace it.
        addresses = _addresses((resolve or system_resolver)(host, port))
    else:
        addresses = [literal]
    if not addresses:
        raise OSError(f"no address for {host!r}")
    refused(addresses, policy)
    return addresses


def _addresses(texts: Iterable[str]) -> list[IPAddress]:
    # A scoped IPv6 address (fe80::1%eth0) is link-local, which is refused anyway.
    return [ipaddress.ip_address(text.split("%", 1)[0]) for text in texts]


def refused(addresses: Sequence[IPAddress], policy: UrlPolicy) -> None:
    """Raise if any address is refused: one bad answer among good ones is still a way in."""
    if any(policy.refuses(a) for a in addresses):
        raise WebhookUrlError(
            "a webhook URL must not reach a private, loopback, link-local or metadata address"
        )


def check_webhook_url(url: str, policy: UrlPolicy, resolve: Resolver | None = None) -> str:
    """Refuse a URL at registration: bad scheme, an IP literal or a name that resolves badly.

    A name that does not resolve now is accepted: delivery checks it again at every attempt.
    """
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"a webhook URL must be at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookUrlError(f"invalid webhook URL {url!r}: bad port") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookUrlError(f"invalid webhook URL {url!r}: expected https://host/path")
    check_scheme(parts.scheme, host, policy)
    try:
        checked_addresses(host, port, policy, resolve)
    except OSError:
        pass
    except UnicodeError as exc:  # an IDNA name the resolver cannot encode
        raise WebhookUrlError(f"invalid webhook URL {url!r}: bad host name") from exc
    return url
