"""The one way request bodies are decoded: orjson, strict UTF-8, bounded depth.

FastAPI decodes JSON bodies with the standard library, which accepts what cannot be stored
or sent on: lone surrogates (`"\\ud800"`), `NaN`, and nesting as deep as the interpreter's
recursion limit, while orjson (which writes every JSON column and every upstream request)
refuses more than 254 levels. So every route of the API is a `JSONBodyRoute`, whose request
decodes with orjson (invalid UTF-8 and `NaN` are syntax errors there) and refuses values
nested deeper than `MAX_JSON_DEPTH`. Only a body that orjson refuses for an escaped lone
surrogate is decoded again by the standard library, so that the text fields can keep it as
U+FFFD while identifiers refuse it by name. A failure is a `json.JSONDecodeError`,
which FastAPI turns into a validation error, rendered as 422 `invalid_json` naming the
reason (`app/api/errors.py`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

# Deeper than any UI message or metadata needs, far below orjson's 254 levels (what can be
# stored), and cheap to check.
MAX_JSON_DEPTH = 64


def _too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests lists/objects more than `limit` levels deep (iterative walk)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _int(text: str) -> int | float:
    """As orjson reads a number: an int within 64 bits, else a float (which it can write)."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else _float(text)


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise json.JSONDecodeError("number is infinity when parsed as double", text, 0)
    return value


def _with_lone_surrogates(raw: bytes) -> Any:
    """`raw` (valid UTF-8) decoded by the standard library, which keeps escaped lone
    surrogates (`"\\ud83d"`, what `JSON.stringify` makes of half an emoji) in its strings;
    numbers are read as orjson reads them, so that everything decoded can be written."""
    try:
        return json.loads(
            raw.decode(), parse_constant=_no_constants, parse_int=_int, parse_float=_float
        )
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", "", 0) from None


def decode_json(raw: bytes) -> Any:
    """`raw` as JSON, or a `json.JSONDecodeError` saying why not.

    Escaped lone surrogates are decoded (as Python does) rather than refused: the fields
    they may reach either refuse them by name or replace them (`app/api/text.py`).
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in exc.msg or not _valid_utf8(raw):
            raise json.JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
        value = _with_lone_surrogates(raw)
    if isinstance(value, (dict, list)) and _too_deep(value, MAX_JSON_DEPTH):
        raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", "", 0)
    return value


def _valid_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


class StrictJSONRequest(Request):
    """A request whose `json()` is `decode_json` of its body."""

    async def json(self) -> Any:
        """The body decoded once by `decode_json`."""
        if not hasattr(self, "_json"):
            self._json = decode_json(await self.body())
        return self._json


class JSONBodyRoute(APIRoute):
    """A route whose body is decoded by `decode_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a `StrictJSONRequest`."""
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
