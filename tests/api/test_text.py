"""Client strings: names with NUL, control characters or lone surrogates are refused (422
naming the field); the text of user messages keeps them as U+FFFD."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from app.api.text import Identifier, Metadata, Text, Title, clean_value, visible_text
from app.config import Settings
from tests.conftest import bearer


def test_visible_text_replaces_nul_and_lone_surrogates() -> None:
    assert visible_text("a\x00b\ud800c\U0001f600") == "a\ufffdb\ufffdc\U0001f600"
    assert visible_text("plain\ttext\n") == "plain\ttext\n"


def test_clean_value_reaches_every_string_and_key() -> None:
    value = {"k\x00": ["x\udc00", {"y": "\x00"}], "n": 1}
    assert clean_value(value) == {"k\ufffd": ["x\ufffd", {"y": "\ufffd"}], "n": 1}


@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "a\x7fb", "a\ud800b", "a\x85b"])
def test_identifiers_and_titles_refuse_control_characters(bad: str) -> None:
    for kind in (Identifier, Title):
        with pytest.raises(ValidationError):
            TypeAdapter(kind).validate_python(bad)


@pytest.mark.parametrize("bad", [{"a": "\x00"}, {"\x00": 1}, {"a": [{"b": "\ud800"}]}])
def test_metadata_refuses_what_postgres_cannot_store(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="must not contain"):
        TypeAdapter(Metadata).validate_python(bad)


def test_metadata_keeps_other_control_characters() -> None:
    assert TypeAdapter(Metadata).validate_python({"a": "x\ny\t"}) == {"a": "x\ny\t"}


@pytest.mark.parametrize(
    ("body", "field"),
    [({"title": "a\x00b"}, "title"), ({"metadata": {"k": "a\x00b"}}, "metadata")],
)
async def test_nul_in_title_or_metadata_is_422_not_500(
    client: httpx.AsyncClient, settings: Settings, body: dict[str, Any], field: str
) -> None:
    headers = bearer(settings, "alice")
    created = await client.post("/api/v1/sessions", json=body, headers=headers)
    assert created.status_code == 422
    assert created.json()["error"]["fields"][0]["field"] == field
    await client.post("/api/v1/sessions", json={"id": "nul-patch"}, headers=headers)
    patched = await client.patch("/api/v1/sessions/nul-patch", json=body, headers=headers)
    assert patched.status_code == 422
    assert patched.json()["error"]["fields"][0]["field"] == field


async def test_nul_in_before_is_422_not_500(client: httpx.AsyncClient, settings: Settings) -> None:
    headers = bearer(settings, "alice")
    await client.post("/api/v1/sessions", json={"id": "nul-before"}, headers=headers)
    response = await client.get(
        "/api/v1/sessions/nul-before/messages", params={"before": "m\x00"}, headers=headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "query.before"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"id": "m\x00", "role": "user", "parts": [{"type": "text", "text": "hi"}]}, "id"),
        (
            {
                "id": "m1",
                "role": "user",
                "parts": [{"type": "text", "text": "hi"}],
                "metadata": {"k": "\x00"},
            },
            "metadata",
        ),
    ],
)
async def test_nul_in_a_message_id_or_metadata_is_422_not_500(
    client: httpx.AsyncClient, settings: Settings, message: dict[str, Any], field: str
) -> None:
    response = await client.post(
        "/api/v1/chat",
        json={"id": "nul-chat", "messages": [message]},
        headers=bearer(settings, "alice"),
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == f"messages.0.{field}"


def test_text_keeps_nul_and_lone_surrogates_as_replacement_characters() -> None:
    assert TypeAdapter(Text).validate_python("a\x00b\ud83d") == "a\ufffdb\ufffd"
