"""Structured logs: a JSON formatter and the request and connector context every line carries."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

LOG_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("ioc_log_context", default=None)
"""Fields added to every log line of the current task (request, connector run)."""

_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}  # uvicorn's copy of the message with ANSI colours
)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Add `fields` to every log line written inside the block (tasks started in it too)."""
    merged = {**(LOG_CONTEXT.get() or {}), **fields}
    token = LOG_CONTEXT.set(merged)
    try:
        yield merged
    finally:
        LOG_CONTEXT.reset(token)


def current_context() -> dict[str, Any]:
    """The fields the current task's log lines carry."""
    return dict(LOG_CONTEXT.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise a record with the current context."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(LOG_CONTEXT.get() or {})
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ContextTextFormatter(logging.Formatter):
    """The plain text format, with the context appended as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, then the context."""
        line = super().format(record)
        context = LOG_CONTEXT.get()
        if not context:
            return line
        return line + " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"


def configure_logging(*, level: str, fmt: str) -> None:
    """Route every logger (uvicorn's too) to stderr as JSON lines or text."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else ContextTextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.NOTSET)
    # The request middleware logs each request with its route and duration.
    logging.getLogger("uvicorn.access").disabled = True
    # One line per upstream request or job run drowns what matters; poll runs are recorded.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    # "skipped: maximum number of running instances": a poll overran its interval, by design.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
