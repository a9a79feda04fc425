"""Logs: JSON, one object a line, each carrying the request id when there is one; or, for a
person at a terminal, short human lines (time, process, message).

Never log secrets: loggers get ids and counts, never bodies, headers or record contents.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from broker.settings import LogFormat

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str = "broker") -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process_name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid is not None:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class HumanFormatter(logging.Formatter):
    """`19:24:33 worker  message`: what a person starting `misbroker up` needs to read."""

    def __init__(self, process_name: str = "broker", *, terminal: bool = False) -> None:
        super().__init__()
        self.process_name = process_name
        # On a terminal a progress bar (another process's) may hold the current line without
        # a newline: start at its beginning and erase it, so the log line reads whole.
        self.prefix = "\r\x1b[K" if terminal else ""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")  # noqa: DTZ006 - a person's local time
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = f"{self.prefix}{when} {self.process_name:<7} {level}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def wants_human(fmt: LogFormat, stream: Any) -> bool:
    """Human lines when asked, or (auto) when the stream is a terminal."""
    if fmt is LogFormat.AUTO:
        isatty = getattr(stream, "isatty", None)
        return bool(isatty is not None and isatty())
    return fmt is LogFormat.HUMAN


def configure_logging(
    level: str = "INFO", process_name: str = "broker", fmt: LogFormat = LogFormat.JSON
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if wants_human(fmt, sys.stderr):
        handler.setFormatter(HumanFormatter(process_name, terminal=sys.stderr.isatty()))
    else:
        handler.setFormatter(JsonFormatter(process_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own handlers would print plain text; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "alembic"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs whole URLs at INFO; a partner's webhook URL may carry a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # botocore (the S3 cold tier) and urllib3 log whole requests at DEBUG: signed headers
    # name the access key.  A broker at DEBUG must not print them.
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # alembic announces each of its plugins at INFO whenever a process imports it.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Celery tells of every task received, sent and succeeded at INFO: with beat's 5-second
    # ticks that is a screenful a minute of periodic work that mostly found nothing.  Those
    # lines are debug; a task that did something says so itself, and failures stay errors.
    for name in _ROUTINE:
        logging.getLogger(name).addFilter(_routine_to_debug)


_ROUTINE = ("celery.worker.strategy", "celery.app.trace", "celery.beat")


def _routine_to_debug(record: logging.LogRecord) -> bool:
    if record.levelno != logging.INFO:
        return True
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger().isEnabledFor(logging.DEBUG)
