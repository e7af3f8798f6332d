"""Structured outputs: a small, valid instance of the JSON schema a request asks for.

Claude Code asks for one in its side requests (e.g. a session title with
`output_config.format = {"type": "json_schema", ...}`), so those get JSON they can parse
instead of an echo, and directives in the quoted user text do not fire there.
"""

from __future__ import annotations

from typing import Any

import orjson


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """Return the JSON schema of `output_config.format` (or legacy `output_format`), if any."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else {}
    return None


def instance_of(schema: Any, name: str = "value") -> Any:
    """Return a deterministic value that satisfies common JSON schemas."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return instance_of(schema[key][0], name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {key: instance_of(properties.get(key), key) for key in required}
    if kind == "array":
        return [instance_of(schema.get("items"), name)] * int(schema.get("minItems", 0))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return f"Fake {name}"


def structured_text(schema: dict[str, Any]) -> str:
    """Return the reply text for a structured-output request: the instance as JSON."""
    return orjson.dumps(instance_of(schema)).decode()
