"""Structured JSON logs carrying the current trace and span ids.

Anything that looks like a Plex token or bearer credential is redacted before a record is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

_SECRET_PATTERNS = [
    re.compile(r"(?i)(x-plex-token[=:]\s*)[^&\s\"']+"),
    re.compile(r"(?i)(authorization[=:]\s*bearer\s+)[^\s\"']+"),
    re.compile(r"(?i)(authToken[\"']?\s*[=:]\s*[\"']?)[^&\s\"',}]+"),
    re.compile(r"(?i)(token[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9_\-]{12,}"),
]
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """Replace anything that looks like a credential with '<redacted>'."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1<redacted>", text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace ids, and any `extra` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool) or value is None else redact(str(value))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a developer's terminal, still redacted and trace-tagged."""

    def format(self, record: logging.LogRecord) -> str:
        span_context = trace.get_current_span().get_span_context()
        trace_part = f" trace={span_context.trace_id:032x}" if span_context.is_valid else ""
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}{trace_part}: {record.getMessage()}"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return redact(base)


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger to stderr in the chosen format; quiet noisy libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "nats", "sqlalchemy.engine", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
