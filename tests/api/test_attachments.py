"""Attachments of a user message: media type, data URL, base64, size and count are checked
before anything is stored (422, or 413 for size), each refusal naming its rule."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from app.api.attachments import check_attachments
from app.config import Settings
from app.errors import AppError
from tests.conftest import bearer

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
MAX_BYTES = 1000


def file_part(data: bytes, media: str = "image/png", **extra: Any) -> dict[str, Any]:
    url = f"data:{media};base64,{base64.b64encode(data).decode()}"
    return {"type": "file", "mediaType": media, "url": url, **extra}


def refusal(parts: list[dict[str, Any]], max_count: int = 2) -> AppError:
    with pytest.raises(AppError) as caught:
        check_attachments(parts, MAX_BYTES, max_count)
    return caught.value


@pytest.mark.parametrize(
    "part",
    [
        file_part(PNG, filename="photo.png"),
        file_part(b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image/jpeg"),
        file_part(b"GIF89a" + b"\x00" * 8, "image/gif"),
        file_part(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        file_part(b"hello", "text/plain"),
        file_part(b"%PDF-1.7", "application/pdf"),
        file_part(b"a,b", "text/csv"),
        file_part(b"# t", "Text/Markdown; charset=utf-8"),
    ],
    ids=["png", "jpeg", "gif", "webp", "text", "pdf", "csv", "markdown-with-params"],
)
def test_allowed_attachments_pass(part: dict[str, Any]) -> None:
    check_attachments([{"type": "text", "text": "see"}, part], MAX_BYTES, 2)


def test_svg_is_refused_as_an_unsupported_media_type() -> None:
    error = refusal([file_part(b"<svg/>", "image/svg+xml")])
    assert (error.status, error.code) == (422, "unsupported_media_type")
    assert "image/png" in error.message


def test_an_image_whose_bytes_are_not_its_type_is_refused() -> None:
    error = refusal([file_part(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png")])
    assert (error.status, error.code) == (422, "invalid_attachment")
    assert "not an image of type image/png" in error.message


def test_invalid_base64_is_refused() -> None:
    part = file_part(PNG)
    part["url"] = part["url"][:-4] + "!!!!"
    error = refusal([part])
    assert (error.status, error.code) == (422, "invalid_attachment")
    assert "base64" in error.message


def test_a_remote_url_is_refused() -> None:
    part = {"type": "file", "mediaType": "image/png", "url": "http://169.254.169.254/x.png"}
    error = refusal([part])
    assert "only data: URLs" in error.message


def test_a_data_url_of_another_type_is_refused() -> None:
    part = file_part(PNG)
    part["mediaType"] = "image/gif"
    assert "says 'image/png'" in refusal([part]).message


def test_a_file_above_the_size_limit_is_413_naming_the_setting() -> None:
    error = refusal([file_part(PNG + b"\x00" * MAX_BYTES)])
    assert (error.status, error.code) == (413, "attachment_too_large")
    assert "COPILOT_MAX_ATTACHMENT_BYTES" in error.message


def test_too_many_files_is_422_naming_the_setting() -> None:
    error = refusal([file_part(PNG)] * 3)
    assert (error.status, error.code) == (422, "too_many_attachments")
    assert "COPILOT_MAX_ATTACHMENTS" in error.message


def test_a_filename_too_long_is_refused() -> None:
    assert "filename" in refusal([file_part(PNG, filename="f" * 300)]).message


async def test_a_bad_attachment_is_refused_before_anything_is_stored(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = bearer(settings, "alice")
    message = {"id": "m1", "role": "user", "parts": [file_part(b"<svg/>", "image/svg+xml")]}
    response = await client.post(
        "/api/v1/chat", json={"id": "svg", "messages": [message]}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert (await client.get("/api/v1/sessions/svg", headers=headers)).status_code == 404
