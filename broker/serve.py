"""Run the API under uvicorn with the broker's logging (used by `misbroker up`).

With `MISBROKER_TLS_CERT_FILE` and `MISBROKER_TLS_KEY_FILE` it serves HTTPS on the context
of `broker.tls` (TLS 1.2 at least, 1.3 preferred), never uvicorn's default one.
"""

from __future__ import annotations

import argparse
import gc
import ssl
import sys
from collections.abc import Callable

import uvicorn

from broker.logging import configure_logging
from broker.settings import SettingsError, load_settings
from broker.tls import configured_context


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker.serve")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        settings = load_settings()
        context = configured_context(settings.broker)
    except SettingsError as exc:
        sys.stderr.write(f"misbroker: error: {exc}\n")
        sys.exit(2)
    configure_logging(
        settings.broker.log_level, process_name="api", fmt=settings.broker.effective_log_format
    )
    import broker.app  # noqa: F401 - imported now so that the freeze below covers it

    # Everything imported so far lives as long as the process: move it out of the
    # collector's view, so a full collection walks only what requests allocate (a full walk
    # of FastAPI, SQLAlchemy and pydantic's objects stalled every in-flight read ~90 ms).
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        "broker.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        ssl_context_factory=_ours(context) if context is not None else None,
    )
    uvicorn.Server(config).run()


def _ours(
    context: ssl.SSLContext,
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    return factory


if __name__ == "__main__":
    main()
