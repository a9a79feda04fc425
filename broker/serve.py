"""Run the API under uvicorn with the broker's JSON logging (used by `misbroker up`)."""

from __future__ import annotations

import argparse
import gc

import uvicorn

from broker.logging import configure_logging
from broker.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m broker.serve")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging(load_settings().broker.log_level, process_name="api")
    import broker.app  # noqa: F401 - imported now so that the freeze below covers it

    # Everything imported so far lives as long as the process: move it out of the
    # collector's view, so a full collection walks only what requests allocate (a full walk
    # of FastAPI, SQLAlchemy and pydantic's objects stalled every in-flight read ~90 ms).
    gc.collect()
    gc.freeze()
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
