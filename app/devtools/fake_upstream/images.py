"""The checks the real Messages API makes on base64 image blocks, answered with its 400.

An image must be one of the four media types the API reads, decode as base64, stay under
5 MB, and be a whole image of its declared type (signature at the start, the format's end
marker at the end): a truncated or mislabelled file is `Could not process image`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from app.devtools.fake_upstream.errors import ApiError, api_error

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _whole_image(media: str, data: bytes) -> bool:
    if media == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")
    if media == "image/jpeg":
        return data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")
    if media == "image/gif":
        return data[:6] in (b"GIF87a", b"GIF89a") and data.endswith(b";")
    size = int.from_bytes(data[4:8], "little")
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and size == len(data) - 8


def _image_error(where: str, source: Any) -> str | None:
    if not isinstance(source, dict) or source.get("type") != "base64":
        return None
    media = source.get("media_type")
    if media not in MEDIA_TYPES:
        allowed = ", ".join(f"'{m}'" for m in MEDIA_TYPES)
        return f"{where}.source.base64.media_type: Input should be {allowed}"
    try:
        data = base64.b64decode(str(source.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        return f"{where}.source.base64.data: invalid base64 data"
    if len(data) > MAX_IMAGE_BYTES:
        return (
            f"{where}.source.base64: image exceeds 5 MB maximum: {len(data)} bytes > 5242880 bytes"
        )
    if not _whole_image(str(media), data):
        return f"{where}.source.base64.data: Could not process image"
    return None


def image_error(body: dict[str, Any]) -> ApiError | None:
    """The 400 for the first unreadable image block of the request's messages, if any."""
    for m, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for c, block in enumerate(content):
            if isinstance(block, dict) and block.get("type") == "image":
                problem = _image_error(f"messages.{m}.content.{c}.image", block.get("source"))
                if problem is not None:
                    return api_error(400, message=problem)
    return None
