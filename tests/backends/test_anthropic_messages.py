"""Stored UIMessages -> Messages API history: alternation, and which images are sent in full."""

from __future__ import annotations

from typing import Any

from app.backends.anthropic_messages import to_anthropic

IMAGE_URL = "data:image/png;base64,iVBORw0KGgo="


def user(text: str, *files: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}, *files]}


def reply(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "parts": [{"type": "step-start"}, *parts]}


def image(name: str | None = "photo.png") -> dict[str, Any]:
    part = {"type": "file", "mediaType": "image/png", "url": IMAGE_URL}
    return part if name is None else {**part, "filename": name}


ANSWER = {"type": "text", "text": "a cat"}
FAILED = {"type": "data-error", "data": {"code": "invalid_request", "message": "bad image"}}


def blocks(message: dict[str, Any]) -> list[str]:
    return [b["type"] if b["type"] != "text" else b["text"] for b in message["content"]]


def test_the_current_message_sends_its_image_in_full() -> None:
    messages = to_anthropic([user("what is this?", image())])
    assert messages[0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }


def test_an_earlier_image_the_model_answered_is_sent_again() -> None:
    messages = to_anthropic([user("what is this?", image()), reply(ANSWER), user("and now?")])
    assert blocks(messages[0]) == ["what is this?", "image"]


def test_an_earlier_image_whose_turn_failed_becomes_a_mention() -> None:
    history = [user("what is this?", image()), reply(FAILED), user("hello")]
    assert blocks(to_anthropic(history)[0]) == [
        "what is this?",
        "[image photo.png was attached earlier]",
        "hello",
    ]


def test_an_earlier_image_without_a_reply_becomes_a_mention() -> None:
    messages = to_anthropic([user("first", image(None)), user("second")])
    assert blocks(messages[0]) == ["first", "[an image (image/png) was attached earlier]", "second"]


def test_an_image_is_confirmed_only_by_the_reply_to_its_own_message() -> None:
    history = [
        user("one", image("a.png")),
        reply(FAILED),
        user("two"),
        reply(ANSWER),
        user("three"),
    ]
    assert blocks(to_anthropic(history)[0])[:2] == ["one", "[image a.png was attached earlier]"]


def test_a_reply_with_only_a_tool_call_confirms_the_image() -> None:
    tool = {
        "type": "tool-clock",
        "toolCallId": "t1",
        "state": "output-available",
        "input": {},
        "output": "12:00",
    }
    history = [user("time?", image()), reply(tool), user("thanks")]
    assert blocks(to_anthropic(history)[0]) == ["time?", "image"]


def test_other_files_are_mentioned_by_name() -> None:
    note = {
        "type": "file",
        "mediaType": "text/plain",
        "url": "data:text/plain;base64,aGk=",
        "filename": "notes.txt",
    }
    assert blocks(to_anthropic([user("read", note)])[0]) == [
        "read",
        "[attached file: notes.txt (text/plain)]",
    ]
