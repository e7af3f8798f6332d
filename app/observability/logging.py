"""Logging setup: one line per record, as text or JSON, with the work's ids and no secrets.

`copilot serve` configures the root logger once (`setup_logging`); uvicorn is told to leave
logging alone (`log_config=None`), so its lines go through the same handler. The handler's
filters run for every record, whichever logger made it: `IdsFilter` notes the ids of the work
running (`log_context`), `Redactor` renders the message without secrets. The format is
`COPILOT_LOG_FORMAT`: `json` (one object a line: `ts`, `level`, `logger`, `message`, the
known ids, `exc_info`), `text`, or `auto`, text when stderr is a terminal and JSON otherwise.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from app.config import Settings
from app.observability.log_context import FIELDS, current
from app.observability.redaction import Redactor, secret_values

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(ids)s"
# Loggers that say too much below WARNING: the anthropic SDK logs whole requests at DEBUG.
NOISY = ("httpx", "httpx2", "httpcore", "anthropic")


class IdsFilter(logging.Filter):
    """Puts the ids of the work running now on the record (those set by `extra` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current()
        for name in FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, getattr(ids, name))
        return True


class TextFormatter(logging.Formatter):
    """The readable line, with the known ids at its end: `[session=... turn=...]`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        known = [
            f"{name.removesuffix('_id')}={value}"
            for name in FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        record.ids = f" [{' '.join(known)}]" if known else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def wants_json(log_format: str, stream: TextIO) -> bool:
    """Whether `COPILOT_LOG_FORMAT` means JSON lines on `stream`."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return log_format == "json"


def log_handler(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """The handler every record goes through: ids, redaction, then the chosen format."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.addFilter(IdsFilter())
    server = settings.server
    handler.addFilter(Redactor(secret_values(settings), log_prompts=server.log_prompts))
    json_lines = wants_json(server.log_format, out)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    return handler


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once, for the whole process."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(log_handler(settings))
    root.setLevel(settings.server.log_level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
