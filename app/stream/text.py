"""Text that JSON and PostgreSQL can carry: U+0000 and lone surrogates become U+FFFD.

PostgreSQL refuses U+0000 in `jsonb` and `text`; orjson refuses lone surrogates (which a model's
JSON can hold as escapes). Either used to make the final write of a turn fail. Both are
replaced, visibly, by U+FFFD where a chunk is encoded (`app.stream.sse.frame`), so the client
and the database see the same text. Finding them costs the hot path one search of the encoded
bytes: orjson itself refuses the surrogates.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """`text` with every U+0000 and every lone surrogate replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16: a surrogate pair split in two code points is joined again, a lone
        # one is replaced.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def clean(value: Any) -> Any:
    """`value` with every string in it (keys too) cleaned; dicts and lists in place."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        for key, item in list(value.items()):
            new_key = clean_text(key) if isinstance(key, str) else key
            if new_key != key:
                del value[key]
            value[new_key] = clean(item)
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = clean(item)
        return value
    if isinstance(value, tuple):
        return [clean(item) for item in value]
    return value


def parts_text(parts: list[dict[str, Any]]) -> str:
    """The text parts of a UIMessage, joined."""
    return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
