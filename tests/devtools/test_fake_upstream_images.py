"""The fake upstream refuses unreadable image blocks with the real API's 400."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16 + b"\x00\x00\x00\x00IEND\xaeB`\x82"
WEBP = b"RIFF" + (8).to_bytes(4, "little") + b"WEBPVP8 "


def _with_image(data: bytes | str, media: str = "image/png") -> dict[str, Any]:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": media, "data": encoded}}
    content = [{"type": "text", "text": "what is this?"}, image]
    return {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize(
    ("data", "media"),
    [(PNG, "image/png"), (WEBP, "image/webp"), (b"GIF89a;", "image/gif")],
    ids=["png", "webp", "gif"],
)
def test_a_whole_image_is_answered(fake: FakeUpstreamHandle, data: bytes, media: str) -> None:
    response = httpx.post(f"{fake.base_url}/v1/messages", json=_with_image(data, media))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("data", "media", "says"),
    [
        (PNG[:-12], "image/png", "Could not process image"),
        (PNG, "image/jpeg", "Could not process image"),
        (b"<svg/>", "image/svg+xml", "media_type: Input should be"),
        ("not base64!", "image/png", "invalid base64"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024), "image/png", "exceeds 5 MB"),
    ],
    ids=["truncated", "mislabelled", "svg", "bad-base64", "too-large"],
)
def test_an_unreadable_image_is_a_400_invalid_request(
    fake: FakeUpstreamHandle, data: bytes | str, media: str, says: str
) -> None:
    response = httpx.post(f"{fake.base_url}/v1/messages", json=_with_image(data, media), timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages.0.content.1.image.source.base64")
    assert says in error["message"]
