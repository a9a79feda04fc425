"""Run the API under uvicorn with the broker's JSON logging (used by `misbroker up`)."""

from __future__ import annotations

import argparse

import uvicorn

from broker.logging import configure_logging
from broker.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker.serve")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging(load_settings().broker.log_level, process_name="api")
    uvicorn.run(
        "broker.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
