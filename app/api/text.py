"""What strings from a client may contain: identifiers and titles are refused, text is cleaned.

PostgreSQL stores no U+0000 (neither in text columns nor in jsonb) and UTF-8 has no lone
surrogates, so either would fail the request at its first write, as a 500. Names (session
and message ids, titles, metadata) are refused with a 422 naming the field: they are the
client's keys, and changing them silently would break its lookups. What a person wrote or
attached (the parts of a user message) is kept, with each such character replaced by U+FFFD,
visibly: refusing a whole message for one stray byte pasted from a terminal helps nobody.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints

from app.stream.text import clean, clean_text

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

# The one cleaning rule, shared with what the model writes (`app.stream.text`).
visible_text = clean_text


def clean_value(value: Any) -> Any:
    """A copy of a JSON value with `visible_text` applied to every string in it, keys
    included."""
    return clean(copy.deepcopy(value))


def visible_if_text(value: Any) -> Any:
    """`visible_text(value)` for a string, else `value` (a validator run before `str`'s own,
    which refuses lone surrogates)."""
    return visible_text(value) if isinstance(value, str) else value


def _printable(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"must not contain control characters (U+{ord(found.group()):04X})")
    return value


def storable_json(value: Any) -> Any:
    """Refuse a JSON value holding a string (or key) PostgreSQL cannot store."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found = _UNSTORABLE.search(item)
            if found:
                raise ValueError(f"must not contain U+{ord(found.group()):04X}")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


# An identifier chosen by the client: a message id, a paging anchor.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(_printable)
]
# A title: one line of printable text.
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_printable)
]
# What a person wrote: kept, with NUL and lone surrogates made visible.
Text = Annotated[str, BeforeValidator(visible_if_text)]
# Client metadata: any JSON object whose strings can be stored.
Metadata = Annotated[dict[str, Any], AfterValidator(storable_json)]
