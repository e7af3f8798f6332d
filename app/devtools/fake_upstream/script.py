"""Reply plans: what the fake answers, from a `[[fake:...]]` directive or a queued JSON object.

Grammar: `[[fake:KIND key=value key=value ...]]`. A value is a bare word (no spaces), a
"double-quoted" JSON string, a 'single-quoted' raw string, or a JSON object/array written
as-is (`input={"city": "Paris"}`). Every key is a `ReplyPlan` field; the admin endpoint takes
the same keys as JSON, with `kind` among them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

KINDS = frozenset({"echo", "text", "thinking", "tool", "error"})
_INT_FIELDS = frozenset({"tokens", "thinking", "status", "times", "after", "drop_after", "context"})
_FLOAT_FIELDS = frozenset({"rate", "delay", "retry_after"})
_STR_FIELDS = frozenset({"text", "name", "message", "error_type"})
_DIRECTIVE_START = re.compile(r"\[\[fake:([a-z_]+)")


class PlanError(ValueError):
    """A directive or queued plan that cannot be understood."""


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """One scripted reply; see docs/fake-upstream.md for what every field does."""

    kind: str = "echo"
    tokens: int | None = None
    text: str | None = None
    rate: float | None = None
    thinking: int = 0
    name: str | None = None
    input: Any = field(default=None)
    status: int = 500
    message: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    times: int | None = None
    after: int | None = None
    delay: float = 0.0
    drop_after: int | None = None
    context: int | None = None
    source: str = ""


_FIELD_NAMES = frozenset(f.name for f in fields(ReplyPlan)) - {"source"}


def _coerce(key: str, value: Any) -> Any:
    try:
        if key in _INT_FIELDS:
            return int(value)
        if key in _FLOAT_FIELDS:
            return float(value)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"{key}: expected a number, got {value!r}") from exc
    if key in _STR_FIELDS:
        return str(value)
    return value


def plan_from_mapping(raw: dict[str, Any], source: str = "") -> ReplyPlan:
    """Build a plan from a JSON object (admin queue) or parsed directive parameters."""
    kind = str(raw.get("kind", "echo"))
    if kind not in KINDS:
        raise PlanError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    values: dict[str, Any] = {"kind": kind, "source": source}
    for key, value in raw.items():
        if key == "kind":
            continue
        if key not in _FIELD_NAMES:
            raise PlanError(f"unknown parameter {key!r} for kind {kind!r}")
        values[key] = _coerce(key, value)
    if kind == "thinking":
        values["kind"] = "text"
        values.setdefault("thinking", 16)
    if kind == "tool" and isinstance(values.get("input"), str):
        values["input"] = _json_value(values["input"])
    return ReplyPlan(**values)


def _json_value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise PlanError(f"input: not valid JSON: {text!r}") from exc


def _scan_bracketed(text: str, start: int) -> int:
    """Return the index just past the JSON object/array that starts at `start`."""
    depth = 0
    i = start
    in_string = False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PlanError("unterminated JSON value in directive")


def _parse_params(text: str, pos: int) -> tuple[dict[str, Any], int]:
    """Parse `key=value` pairs from `pos` up to the closing `]]`; return them and the end."""
    params: dict[str, Any] = {}
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if text.startswith("]]", pos):
            return params, pos + 2
        match = re.compile(r"([a-z_]+)=").match(text, pos)
        if match is None:
            raise PlanError(f"expected key=value or ]] at {text[pos : pos + 20]!r}")
        key = match.group(1)
        pos = match.end()
        if pos >= len(text):
            raise PlanError(f"missing value for {key!r}")
        ch = text[pos]
        if ch == '"':
            end = pos + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            if end >= len(text):
                raise PlanError(f"unterminated string for {key!r}")
            # `json`, not orjson: a test may script a lone surrogate ("\ud800").
            params[key] = json.loads(text[pos : end + 1])
            pos = end + 1
        elif ch == "'":
            end = text.find("'", pos + 1)
            if end < 0:
                raise PlanError(f"unterminated string for {key!r}")
            params[key] = text[pos + 1 : end]
            pos = end + 1
        elif ch in "{[":
            end = _scan_bracketed(text, pos)
            params[key] = _json_value(text[pos:end])
            pos = end
        else:
            match = re.compile(r"[^\s\]]+").match(text, pos)
            assert match is not None
            params[key] = match.group(0)
            pos = match.end()


def find_directive(text: str) -> ReplyPlan | None:
    """Return the plan of the first `[[fake:...]]` directive in `text`, or None."""
    match = _DIRECTIVE_START.search(text)
    if match is None:
        return None
    params, end = _parse_params(text, match.end())
    params["kind"] = match.group(1)
    return plan_from_mapping(params, source=text[match.start() : end])


def strip_directives(text: str) -> str:
    """Return `text` without its directives, whitespace-trimmed."""
    out: list[str] = []
    pos = 0
    while (match := _DIRECTIVE_START.search(text, pos)) is not None:
        out.append(text[pos : match.start()])
        try:
            _, pos = _parse_params(text, match.end())
        except PlanError:
            pos = match.end()
    out.append(text[pos:])
    return "".join(out).strip()
