"""TLS served by the broker itself, for a single machine that takes real agents directly.

The agreements behind the product promise TLS 1.3: the context offers 1.3 and 1.2 only
(1.2 for the clients that cannot yet do 1.3), so TLS 1.0 and 1.1 are refused in the
handshake.  In compose or Kubernetes TLS terminates at the ingress instead.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from broker.settings import BrokerSettings, SettingsError


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context over the certificate chain and its key; SettingsError if unusable."""
    for name, path in (
        ("MISBROKER_TLS_CERT_FILE", cert_file),
        ("MISBROKER_TLS_KEY_FILE", key_file),
    ):
        if not path.is_file():
            raise SettingsError(f"{name}: {path} is not a readable file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    # Forward secrecy and AEAD only for 1.2 (1.3's suites are all of that kind already).
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise SettingsError(
            f"MISBROKER_TLS_CERT_FILE/MISBROKER_TLS_KEY_FILE: {cert_file} and {key_file} are "
            f"not a certificate chain and its private key ({reason})"
        ) from None
    return context


def configured_context(settings: BrokerSettings) -> ssl.SSLContext | None:
    """The context the settings ask for, or None to serve plain HTTP."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SettingsError("MISBROKER_TLS_CERT_FILE and MISBROKER_TLS_KEY_FILE go together")
    return server_context(cert, key)
