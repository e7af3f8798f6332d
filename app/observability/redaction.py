"""Secrets and message text never reach a log line.

`Redactor` is a filter on the log handler, so it sees every record, whichever logger (ours,
uvicorn's, a library's) made it. It renders the record's message, its traceback and stack
once, then replaces in that text:

- every known secret value from the settings (each `SecretStr`, each API key, the passwords
  of the database and Redis URLs), wherever it appears;
- what looks like a secret whatever its source: `Bearer` tokens, JWTs, `sk-ant-...` and
  `sk-lf-...` keys, `Authorization` / `X-API-Key` header values, the password of any
  `scheme://user:password@host` URL;
- message text: an argument wrapped in `UserText` is shown only with `COPILOT_LOG_PROMPTS=1`,
  and so are SQLAlchemy's `[parameters: ...]` (the values of a failed statement: a user's
  message, a reply).

Patterns run even with prompts logged: a user who pastes a key in a message does not see it
in the logs. Known values shorter than `MIN_SECRET_CHARS` are not searched for (they would
blank ordinary words); the settings refuse such API keys anyway.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from app.config import Settings

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 8

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
    (re.compile(r"\bsk-(?:ant|lf)-[A-Za-z0-9_-]+"), REDACTED),
    (
        re.compile(r"(?i)\b((?:authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), rf"\1{REDACTED}@"),
)
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")


class UserText:
    """Message text (a prompt, a reply, the CLI's output) as a log argument: shown only when
    `COPILOT_LOG_PROMPTS=1`, and as its length otherwise, also where no `Redactor` runs."""

    __slots__ = ("text",)

    def __init__(self, text: object) -> None:
        self.text = str(text)

    def __str__(self) -> str:
        return f"[{len(self.text)} characters of message text hidden]"

    __repr__ = __str__


def _url_password(url: str | None) -> list[str]:
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def _api_keys(text: str) -> list[str]:
    """The keys of `COPILOT_API_KEYS` (a list of `user=key` or bare keys, or JSON)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            return [stripped]
        keys: list[str] = []
        for value in data.values() if isinstance(data, dict) else []:
            keys.extend(v for v in (value if isinstance(value, list) else [value]) if v)
        return [str(key) for key in keys]
    entries = [entry.strip() for entry in text.split(",")]
    return [part for entry in entries for part in (entry, entry.partition("=")[2]) if part]


def _secret_strings(model: BaseModel) -> Iterable[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from _secret_strings(value)


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, as it could appear in text."""
    found = list(_secret_strings(settings))
    if settings.auth.api_keys is not None:
        found.extend(_api_keys(settings.auth.api_keys.get_secret_value()))
    found.extend(_url_password(settings.database.url))
    found.extend(_url_password(settings.redis.url))
    unique = {value.strip() for value in found if len(value.strip()) >= MIN_SECRET_CHARS}
    # Longest first: a key that contains another is replaced whole.
    return sorted(unique, key=len, reverse=True)


class Redactor(logging.Filter):
    """Renders each record once, without secrets and (unless allowed) without message text."""

    def __init__(self, secrets: Iterable[str] = (), *, log_prompts: bool = False) -> None:
        super().__init__()
        self.log_prompts = log_prompts
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, values))) if values else None

    def redact(self, text: str) -> str:
        """`text` without secrets (and SQL parameters unless prompts may be logged)."""
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        if not self.log_prompts:
            text = _SQL_PARAMETERS.sub(f"[parameters: {REDACTED}]", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(self._message(record))
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def _message(self, record: logging.LogRecord) -> str:
        args = record.args
        if args:
            if isinstance(args, tuple):
                record.args = tuple(self._shown(arg) for arg in args)
            elif isinstance(args, dict):
                record.args = {key: self._shown(value) for key, value in args.items()}
        try:
            return record.getMessage()
        except Exception:  # a broken format string: show what was given
            return f"{record.msg} {record.args!r}"

    def _shown(self, arg: Any) -> Any:
        if isinstance(arg, UserText) and self.log_prompts:
            return arg.text
        return arg
