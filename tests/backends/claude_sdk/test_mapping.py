"""SDK messages -> AgentEvents, without a CLI: the SDK's dataclasses built by hand."""

from __future__ import annotations

from typing import Any

import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

from app.backends.claude_sdk.mapping import TurnMapper, result_error, tool_output
from app.backends.events import (
    ContextChange,
    Finished,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StatusNote,
    StepEnd,
    StepStart,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    UsageReport,
)
from app.store.usage import Usage

MODEL = "claude-test-1"


def _ev(event: dict[str, Any]) -> StreamEvent:
    return StreamEvent(uuid="u", session_id="s", event=event)


def _start(usage: dict[str, int] | None = None) -> StreamEvent:
    return _ev({"type": "message_start", "message": {"usage": usage or {"input_tokens": 10}}})


def _block(index: int, block: dict[str, Any]) -> StreamEvent:
    return _ev({"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> StreamEvent:
    return _ev({"type": "content_block_delta", "index": index, "delta": delta})


def _end(stop_reason: str, output_tokens: int) -> list[StreamEvent]:
    return [
        _ev({"type": "message_delta", "delta": {"stop_reason": stop_reason},
             "usage": {"input_tokens": 10, "output_tokens": output_tokens}}),
        _ev({"type": "message_stop"}),
    ]  # fmt: skip


def _assistant(*content: Any, **extra: Any) -> AssistantMessage:
    return AssistantMessage(content=list(content), model=extra.pop("model", MODEL), **extra)


def _result(**fields: Any) -> ResultMessage:
    base: dict[str, Any] = {
        "subtype": "success", "duration_ms": 1, "duration_api_ms": 1, "is_error": False,
        "num_turns": 1, "session_id": "s", "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }  # fmt: skip
    base.update(fields)
    return ResultMessage(**base)


def _feed(mapper: TurnMapper, *messages: Any) -> list[Any]:
    return [event for message in messages for event in mapper.feed(message)]


def _mapper() -> TurnMapper:
    return TurnMapper("turn1234-x", MODEL, lambda n: n.removeprefix("mcp__copilot__"))


def test_text_streams_token_by_token_in_one_step() -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        _start(),
        _block(0, {"type": "text", "text": ""}),
        _delta(0, {"type": "text_delta", "text": "Hel"}),
        _delta(0, {"type": "text_delta", "text": "lo"}),
        _assistant(TextBlock("Hello")),
        _ev({"type": "content_block_stop", "index": 0}),
        *_end("end_turn", 3),
        _result(),
    )
    tid = "turn1234-1-0t"
    assert events == [
        StepStart(),
        UsageReport(Usage(input_tokens=10), MODEL),
        TextStart(tid),
        TextDelta(tid, "Hel"),
        TextDelta(tid, "lo"),
        TextEnd(tid),
        UsageReport(Usage(output_tokens=3), MODEL),
        StepEnd(),
    ]
    assert mapper.error() is None
    assert mapper.finished() == Finished("stop")


def test_thinking_carries_its_signature() -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        _start(),
        _block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        _delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
        _delta(0, {"type": "signature_delta", "signature": "sig=="}),
        _assistant(ThinkingBlock("hmm", "sig==")),
    )
    rid = "turn1234-1-0r"
    assert events[2:] == [
        ReasoningStart(rid),
        ReasoningDelta(rid, "hmm"),
        ReasoningEnd(rid, "sig=="),
    ]


def test_a_tool_call_streams_its_input_and_its_result_lands_in_the_same_step() -> None:
    mapper = _mapper()
    call = "toolu_1"
    events = _feed(
        mapper,
        _start(),
        _block(0, {"type": "tool_use", "id": call, "name": "mcp__copilot__calculate"}),
        _delta(0, {"type": "input_json_delta", "partial_json": '{"expression": '}),
        _delta(0, {"type": "input_json_delta", "partial_json": '"2+2"}'}),
        _assistant(ToolUseBlock(call, "mcp__copilot__calculate", {"expression": "2+2"})),
        *_end("tool_use", 5),
        UserMessage(content=[ToolResultBlock(call, [{"type": "text", "text": "4.0"}])]),
        _start({"input_tokens": 20}),
    )
    kinds = [e for e in events if not isinstance(e, UsageReport)]
    assert kinds == [
        StepStart(),
        ToolCallStart(call, "calculate"),
        ToolCallDelta(call, '{"expression": '),
        ToolCallDelta(call, '"2+2"}'),
        ToolCallReady(call, "calculate", {"expression": "2+2"}),
        ToolResult(call, 4.0),
        StepEnd(),
        StepStart(),
    ]


def test_an_error_tool_result_such_as_a_hook_denial_is_a_tool_error() -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        UserMessage(content=[ToolResultBlock("t1", "denied: outside the workspace", True)]),
    )
    assert events == [ToolResult("t1", None, "denied: outside the workspace")]


def test_the_assistant_message_supplies_what_the_cut_deltas_lacked() -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        _start(),
        _block(0, {"type": "text", "text": ""}),
        _delta(0, {"type": "text_delta", "text": "The begin"}),
        # the upstream connection dropped; the CLI retried without streaming
        _assistant(TextBlock("The beginning and the end.")),
    )
    tid = "turn1234-1-0t"
    assert events[-2:] == [TextDelta(tid, "ning and the end."), TextEnd(tid)]


def test_a_block_that_never_streamed_is_sent_whole() -> None:
    mapper = _mapper()
    events = _feed(mapper, _assistant(TextBlock("all at once")))
    assert [type(e) for e in events] == [StepStart, TextStart, TextDelta, TextEnd]
    assert isinstance(events[2], TextDelta)
    assert events[2].delta == "all at once"


def test_the_cli_retry_is_a_transient_status() -> None:
    note = _feed(
        _mapper(),
        SystemMessage(
            "api_retry",
            {"attempt": 1, "max_retries": 1, "retry_delay_ms": 545, "error_status": 529,
             "error": "overloaded"},
        ),
    )  # fmt: skip
    assert note == [
        StatusNote("retrying", {"attempt": 2, "by": "cli", "code": "overloaded", "delay_s": 0.545})
    ]


def test_a_cli_compaction_is_a_status_then_a_context_change() -> None:
    mapper = _mapper()
    meta = {"trigger": "auto", "pre_tokens": 12396, "post_tokens": 4007, "duration_ms": 30}
    events = _feed(
        mapper,
        SystemMessage("status", {"status": "compacting", "compact_output_chars": 0}),
        SystemMessage("status", {"status": None, "compact_result": "success"}),
        SystemMessage("compact_boundary", {"compact_metadata": meta}),
    )
    assert events == [
        StatusNote("compacting", {}),
        ContextChange("cli", "auto", tokens_before=12396, tokens_after=4007),
    ]
    assert mapper.compactions == 1


def test_a_manual_compaction_without_counts_is_still_a_context_change() -> None:
    events = _feed(
        _mapper(), SystemMessage("compact_boundary", {"compact_metadata": {"trigger": "manual"}})
    )
    assert events == [ContextChange("cli", "manual")]


def test_the_cli_summary_after_a_compaction_is_never_chat_content() -> None:
    summary = UserMessage(
        [TextBlock("This session is being continued from a previous conversation ...")]
    )
    assert _feed(_mapper(), summary, UserMessage("a plain-text summary")) == []


@pytest.mark.parametrize(
    ("fields", "assistant_error", "text", "code"),
    [
        ({"api_error_status": 401}, "authentication_failed", "Invalid API key", "auth_failed"),
        ({"api_error_status": 429}, "rate_limit", "API Error: 429", "rate_limited"),
        ({"api_error_status": 529}, "server_error", "overloaded", "overloaded"),
        ({"api_error_status": 500}, "server_error", "API Error: 500", "upstream_unavailable"),
        ({"api_error_status": 400}, "unknown", "API Error: 400 Invalid", "invalid_request"),
        ({"api_error_status": 402}, "billing_error", "credit", "billing"),
        ({"terminal_reason": "prompt_too_long", "api_error_status": 400}, "invalid_request",
         "Prompt is too long", "prompt_too_long"),
        ({}, "invalid_request", "Prompt is too long · compaction failed", "prompt_too_long"),
        ({}, "rate_limit", "", "rate_limited"),
        ({"terminal_reason": "max_turns"}, None, "", "tool_loop_limit"),
        ({}, None, "", "upstream_unavailable"),
    ],
)  # fmt: skip
def test_each_error_result_maps_onto_the_taxonomy(
    fields: dict[str, Any], assistant_error: str | None, text: str, code: str
) -> None:
    error = result_error(_result(is_error=True, **fields), assistant_error, text)
    assert error is not None
    assert error.code == code


def test_the_synthetic_error_message_is_never_shown() -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        _assistant(
            TextBlock("Invalid API key"), model="<synthetic>", error="authentication_failed"
        ),
        _result(is_error=True, api_error_status=401, usage={}),
    )
    assert events == []
    error = mapper.error()
    assert error is not None
    assert (error.code, error.detail) == ("auth_failed", "Invalid API key")


@pytest.mark.parametrize("reason", ["aborted_streaming", "aborted_tools"])
def test_an_interrupted_turn_closes_what_is_open_and_is_no_error(reason: str) -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        _start(),
        _block(0, {"type": "text", "text": ""}),
        _delta(0, {"type": "text_delta", "text": "par"}),
        _result(is_error=True, terminal_reason=reason, usage={"input_tokens": 10}),
    )
    assert events[-2:] == [TextEnd("turn1234-1-0t"), StepEnd()]
    assert mapper.error() is None
    assert mapper.finished() == Finished("stop")


def test_max_tokens_finishes_with_length() -> None:
    mapper = _mapper()
    _feed(mapper, _result(stop_reason="max_tokens"))
    assert mapper.finished() == Finished("length", "max_output_tokens")


def test_result_usage_beyond_the_streamed_calls_is_reported_once() -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        _start({"input_tokens": 10}),
        *_end("end_turn", 3),
        _result(usage={"input_tokens": 25, "output_tokens": 7, "cache_read_input_tokens": 4}),
    )
    reports = [e.usage for e in events if isinstance(e, UsageReport)]
    total = Usage()
    for usage in reports:
        total.add(usage)
    assert total == Usage(input_tokens=25, output_tokens=7, cache_read_tokens=4)
    assert reports[-1] == Usage(input_tokens=15, output_tokens=4, cache_read_tokens=4)


def test_tool_output_is_the_json_value_or_the_text() -> None:
    assert tool_output([{"type": "text", "text": '{"a": 1}'}]) == {"a": 1}
    assert tool_output("plain words") == "plain words"
    assert tool_output(None) == ""


def test_repeated_failing_empty_tool_calls_are_counted() -> None:
    mapper = _mapper()
    for n in range(3):
        _feed(
            mapper,
            _start(),
            _assistant(ToolUseBlock(f"t{n}", "mcp__copilot__calculate", {})),
            UserMessage(content=[ToolResultBlock(f"t{n}", "invalid input", True)]),
        )
    assert mapper.empty_tool_errors == 3


def test_sub_agent_messages_are_not_shown() -> None:
    mapper = _mapper()
    events = _feed(
        mapper,
        StreamEvent("u", "s", {"type": "message_start", "message": {}}, parent_tool_use_id="t"),
        _assistant(TextBlock("inner"), parent_tool_use_id="t"),
    )
    assert events == []
