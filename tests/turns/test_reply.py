"""ReplyAssembler: the chunks a turn sends become the stored assistant UIMessage parts."""

from __future__ import annotations

from typing import Any

import pytest

from app.stream import chunks
from app.turns.reply import ReplyAssembler


def _apply(reply: ReplyAssembler, *sent: dict[str, Any]) -> list[dict[str, Any]]:
    for chunk in sent:
        reply.apply(chunk)
    return reply.parts()


def _tool_start(call_id: str = "c1", name: str = "search") -> dict[str, Any]:
    return {
        "type": "tool-input-start",
        "toolCallId": call_id,
        "toolName": name,
        "providerExecuted": True,
    }


def _tool_ready(call_id: str = "c1", name: str = "search", value: Any = None) -> dict[str, Any]:
    return {
        "type": "tool-input-available",
        "toolCallId": call_id,
        "toolName": name,
        "input": {"q": "x"} if value is None else value,
        "providerExecuted": True,
    }


@pytest.fixture
def reply() -> ReplyAssembler:
    return ReplyAssembler()


# -- text and reasoning ------------------------------------------------------------------------


def test_a_new_reply_has_no_parts(reply: ReplyAssembler) -> None:
    assert reply.parts() == []


def test_streamed_text_is_stored_joined_and_done(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "Hel"},
        {"type": "text-delta", "id": "t1", "delta": "lo"},
        {"type": "text-end", "id": "t1"},
    )
    assert parts == [{"type": "text", "text": "Hello", "state": "done"}]


def test_text_still_streaming_is_stored_as_streaming(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "Hel"},
    )
    assert parts == [{"type": "text", "text": "Hel", "state": "streaming"}]


def test_text_rendered_twice_is_not_duplicated(reply: ReplyAssembler) -> None:
    _apply(
        reply, {"type": "text-start", "id": "t1"}, {"type": "text-delta", "id": "t1", "delta": "a"}
    )
    parts = _apply(reply, {"type": "text-delta", "id": "t1", "delta": "b"})
    assert parts[0]["text"] == "ab"
    assert reply.parts()[0]["text"] == "ab"


def test_a_delta_for_an_unknown_part_is_ignored(reply: ReplyAssembler) -> None:
    assert _apply(reply, {"type": "text-delta", "id": "ghost", "delta": "x"}) == []


def test_reasoning_is_stored_as_a_reasoning_part(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        {"type": "reasoning-start", "id": "r1"},
        {"type": "reasoning-delta", "id": "r1", "delta": "think"},
        {"type": "reasoning-end", "id": "r1"},
    )
    assert parts == [{"type": "reasoning", "text": "think", "state": "done"}]


def test_a_reasoning_signature_is_stored_with_the_reasoning_part(
    reply: ReplyAssembler,
) -> None:
    signature = {"anthropic": {"signature": "sig-abc"}}
    parts = _apply(
        reply,
        {"type": "reasoning-start", "id": "r1"},
        {"type": "reasoning-delta", "id": "r1", "delta": "think"},
        {"type": "reasoning-end", "id": "r1", "providerMetadata": signature},
    )
    assert parts == [
        {"type": "reasoning", "text": "think", "state": "done", "providerMetadata": signature}
    ]


def test_parts_keep_the_order_they_were_opened_in(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        {"type": "reasoning-start", "id": "r1"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "b"},
        {"type": "reasoning-delta", "id": "r1", "delta": "a"},
    )
    assert [(p["type"], p["text"]) for p in parts] == [("reasoning", "a"), ("text", "b")]


# -- steps -------------------------------------------------------------------------------------


def test_start_step_is_stored_as_a_step_start_part(reply: ReplyAssembler) -> None:
    assert _apply(reply, {"type": "start-step"}) == [{"type": "step-start"}]


def test_each_step_gets_its_own_step_start_part(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        {"type": "start-step"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-end", "id": "t1"},
        {"type": "finish-step"},
        {"type": "start-step"},
        {"type": "text-start", "id": "t2"},
    )
    assert [p["type"] for p in parts] == ["step-start", "text", "step-start", "text"]


@pytest.mark.parametrize(
    "chunk",
    [
        chunks.start("m1", {"turnId": "t"}),
        {"type": "finish-step"},
        chunks.message_metadata({"usage": {}}),
        chunks.error("internal: boom"),
        chunks.finish("stop", {"turnId": "t"}),
    ],
    ids=lambda c: c["type"],
)
def test_framing_chunks_are_not_stored_as_parts(
    reply: ReplyAssembler, chunk: dict[str, Any]
) -> None:
    assert _apply(reply, chunk) == []


# -- tools -------------------------------------------------------------------------------------


def test_a_tool_call_is_stored_as_a_provider_executed_tool_part(reply: ReplyAssembler) -> None:
    parts = _apply(reply, _tool_start())
    assert parts == [
        {
            "type": "tool-search",
            "toolCallId": "c1",
            "state": "input-streaming",
            "providerExecuted": True,
        }
    ]


def test_streamed_tool_input_is_kept_as_input_text_while_streaming(
    reply: ReplyAssembler,
) -> None:
    parts = _apply(
        reply,
        _tool_start(),
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"q":'},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '"x"}'},
    )
    assert parts[0]["inputText"] == '{"q":"x"}'


def test_available_tool_input_is_stored(reply: ReplyAssembler) -> None:
    parts = _apply(reply, _tool_start(), _tool_ready())
    assert parts == [
        {
            "type": "tool-search",
            "toolCallId": "c1",
            "state": "input-available",
            "providerExecuted": True,
            "input": {"q": "x"},
        }
    ]


def test_a_tool_output_is_stored_with_its_input(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        _tool_start(),
        _tool_ready(),
        {
            "type": "tool-output-available",
            "toolCallId": "c1",
            "output": {"hits": 3},
            "providerExecuted": True,
        },
    )
    assert parts == [
        {
            "type": "tool-search",
            "toolCallId": "c1",
            "state": "output-available",
            "providerExecuted": True,
            "input": {"q": "x"},
            "output": {"hits": 3},
        }
    ]


def test_a_tool_error_is_stored_with_its_input(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        _tool_start(),
        _tool_ready(),
        {
            "type": "tool-output-error",
            "toolCallId": "c1",
            "errorText": "boom",
            "providerExecuted": True,
        },
    )
    assert parts == [
        {
            "type": "tool-search",
            "toolCallId": "c1",
            "state": "output-error",
            "providerExecuted": True,
            "input": {"q": "x"},
            "errorText": "boom",
        }
    ]


def test_two_tool_calls_are_two_parts(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        _tool_start("c1", "search"),
        _tool_start("c2", "fetch"),
        _tool_ready("c2", "fetch", {"url": "u"}),
        _tool_ready("c1", "search"),
    )
    assert [(p["type"], p["toolCallId"], p["input"]) for p in parts] == [
        ("tool-search", "c1", {"q": "x"}),
        ("tool-fetch", "c2", {"url": "u"}),
    ]


def test_a_flush_during_tool_input_leaves_no_partial_input_text_once_the_input_is_available(
    reply: ReplyAssembler,
) -> None:
    _apply(
        reply,
        _tool_start(),
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"q":'},
    )
    parts = _apply(
        reply,
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '"x"}'},
        _tool_ready(),
    )
    assert parts == _apply(ReplyAssembler(), _tool_start(), _tool_ready())


# -- data parts --------------------------------------------------------------------------------


def test_a_data_error_is_stored(reply: ReplyAssembler) -> None:
    parts = _apply(reply, chunks.data_error("rate_limited", "slow down", True, 2.5))
    assert parts == [
        {
            "type": "data-error",
            "id": "error",
            "data": {
                "code": "rate_limited",
                "message": "slow down",
                "retryable": True,
                "retry_after_s": 2.5,
            },
        }
    ]


def test_a_transient_data_status_is_not_stored(reply: ReplyAssembler) -> None:
    assert _apply(reply, chunks.data_status("retrying", attempt=2)) == []


def test_partial_text_is_kept_with_the_data_error_after_it(reply: ReplyAssembler) -> None:
    parts = _apply(
        reply,
        {"type": "start-step"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "half"},
        {"type": "text-end", "id": "t1"},
        {"type": "finish-step"},
        chunks.data_error("overloaded", "busy", True),
    )
    assert [p["type"] for p in parts] == ["step-start", "text", "data-error"]
    assert parts[1]["text"] == "half"


def test_a_data_part_without_an_id_is_stored_without_one(reply: ReplyAssembler) -> None:
    parts = _apply(reply, {"type": "data-note", "data": {"text": "n"}})
    assert parts == [{"type": "data-note", "data": {"text": "n"}}]


# -- dirty -------------------------------------------------------------------------------------


def test_a_new_reply_is_not_dirty(reply: ReplyAssembler) -> None:
    assert reply.dirty is False


def test_applying_a_chunk_makes_the_reply_dirty(reply: ReplyAssembler) -> None:
    reply.apply({"type": "text-start", "id": "t1"})
    assert reply.dirty is True


def test_rendering_the_parts_clears_dirty(reply: ReplyAssembler) -> None:
    reply.apply({"type": "text-start", "id": "t1"})
    reply.parts()
    assert reply.dirty is False


def test_a_delta_after_rendering_makes_the_reply_dirty_again(reply: ReplyAssembler) -> None:
    reply.apply({"type": "text-start", "id": "t1"})
    reply.parts()
    reply.apply({"type": "text-delta", "id": "t1", "delta": "x"})
    assert reply.dirty is True


def test_rendered_parts_are_copies(reply: ReplyAssembler) -> None:
    parts = _apply(reply, {"type": "text-start", "id": "t1"})
    parts[0]["text"] = "tampered"
    assert reply.parts()[0]["text"] == ""
