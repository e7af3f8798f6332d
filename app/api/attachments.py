"""Checks on the files a user message attaches, before anything is stored.

A stored attachment is sent to the model again with later turns' history (only as a mention,
see `app/backends/anthropic_messages.py`, but the first time in full), so what the model
cannot read is refused here, with the rule and its limit named:

- Only `data:` URLs with base64 content. A remote URL would make the server fetch what a
  client names (a request forgery vector) and make the stored message depend on a resource
  that can change or vanish; clients (the AI SDK's `useChat`) send data URLs anyway.
- Images: PNG, JPEG, GIF and WebP (what the Messages API reads); their first bytes must match
  the declared type (an SVG or HTML page named `image/png` is refused). Other files: plain
  text, Markdown, CSV, JSON and PDF (mentioned to the model by name).
- Base64 decodes strictly (no characters outside the alphabet, correct padding).
- At most `COPILOT_MAX_ATTACHMENTS` files, each at most `COPILOT_MAX_ATTACHMENT_BYTES`
  decoded (413; too many files is 422). Their total is bounded by `COPILOT_MAX_BODY_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from app.errors import InvalidInput, PayloadTooLarge

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
FILE_TYPES = ("text/plain", "text/markdown", "text/csv", "application/json", "application/pdf")
MAX_FILENAME_CHARS = 255

_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def media_type(value: str) -> str:
    """A media type without parameters, lower case (`Text/Plain; charset=x` -> `text/plain`)."""
    return value.split(";", 1)[0].strip().lower()


def _image_matches(kind: str, data: bytes) -> bool:
    if kind == "image/webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return data.startswith(_SIGNATURES[kind])


def _refuse(index: int, message: str, code: str = "invalid_attachment") -> InvalidInput:
    return InvalidInput(f"parts.{index} (file): {message}", code=code)


def _decoded(index: int, part: dict[str, Any], kind: str, max_bytes: int) -> bytes:
    url = str(part["url"])
    if not url.startswith("data:"):
        raise _refuse(index, "only data: URLs are accepted (data:<media type>;base64,<content>)")
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise _refuse(index, "the data URL must be base64 (data:<media type>;base64,...)")
    declared = media_type(header.removesuffix(";base64"))
    if declared and declared != kind:
        raise _refuse(index, f"the data URL says {declared!r} but mediaType is {kind!r}")
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise _too_large(index, max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(index, "the content is not valid base64") from None
    if len(data) > max_bytes:
        raise _too_large(index, max_bytes)
    if not data:
        raise _refuse(index, "the file is empty")
    return data


def _too_large(index: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"parts.{index} (file): larger than {max_bytes} bytes (COPILOT_MAX_ATTACHMENT_BYTES)",
        code="attachment_too_large",
    )


def check_attachments(parts: list[dict[str, Any]], max_bytes: int, max_count: int) -> None:
    """Refuse the message if one of its file parts breaks a rule above (422, or 413 for size)."""
    files = [(i, p) for i, p in enumerate(parts) if p.get("type") == "file"]
    if len(files) > max_count:
        raise InvalidInput(
            f"{len(files)} files attached; at most {max_count} (COPILOT_MAX_ATTACHMENTS)",
            code="too_many_attachments",
        )
    for index, part in files:
        kind = media_type(str(part["mediaType"]))
        if kind not in IMAGE_TYPES and kind not in FILE_TYPES:
            allowed = ", ".join((*IMAGE_TYPES, *FILE_TYPES))
            raise _refuse(
                index, f"{kind!r} is not accepted; send one of {allowed}", "unsupported_media_type"
            )
        filename = part.get("filename")
        if filename is not None and (
            not isinstance(filename, str) or len(filename) > MAX_FILENAME_CHARS
        ):
            raise _refuse(
                index, f"filename must be a string of at most {MAX_FILENAME_CHARS} characters"
            )
        data = _decoded(index, part, kind, max_bytes)
        if kind in IMAGE_TYPES and not _image_matches(kind, data):
            raise _refuse(index, f"the content is not an image of type {kind}")
