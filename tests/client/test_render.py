"""What the terminal shows for each chunk type, plain and on a terminal."""

from __future__ import annotations

from typing import Any

from app.client.render import (
    DIM,
    UNDIM,
    TurnView,
    Write,
    message_writes,
    status_text,
    tool_line,
    usage_line,
)

TOOL_CALL: list[dict[str, Any]] = [
    {"type": "tool-input-start", "toolCallId": "c1", "toolName": "get_current_time"},
    {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": "{}"},
    {
        "type": "tool-input-available",
        "toolCallId": "c1",
        "toolName": "get_current_time",
        "input": {},
    },
    {"type": "tool-output-available", "toolCallId": "c1", "output": {"iso": "2026-01-01"}},
]
FINISH = {
    "type": "finish",
    "finishReason": "stop",
    "messageMetadata": {
        "turnId": "t1",
        "model": "claude-x",
        "usage": {
            "inputTokens": 3,
            "outputTokens": 7,
            "cacheReadTokens": 10,
            "cacheWriteTokens": 2,
        },
        "costUsd": 0.00123,
    },
}


def text(part: str, *deltas: str) -> list[dict[str, Any]]:
    return [
        {"type": "text-start", "id": part},
        *({"type": "text-delta", "id": part, "delta": d} for d in deltas),
        {"type": "text-end", "id": part},
    ]


def reasoning(*deltas: str) -> list[dict[str, Any]]:
    return [
        {"type": "reasoning-start", "id": "r"},
        *({"type": "reasoning-delta", "id": "r", "delta": d} for d in deltas),
        {"type": "reasoning-end", "id": "r"},
    ]


def render(chunks: list[dict[str, Any]], color: bool, **state: Any) -> tuple[str, str, TurnView]:
    view = TurnView(color=color, **state)
    writes: list[Write] = []
    for chunk in chunks:
        writes += view.render(chunk)
    out = "".join(t for c, t in writes if c == "out")
    err = "".join(t for c, t in writes if c == "err")
    return out, err, view


def turn(*parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    start = {"type": "start", "messageId": "m", "messageMetadata": {"turnId": "t1"}}
    body = [c for p in parts for c in p]
    return [start, {"type": "start-step"}, *body, {"type": "finish-step"}, FINISH]


def test_plain_output_is_the_reply_text_and_a_final_newline() -> None:
    out, err, view = render(turn(text("a", "Hello", ", world")), color=False)
    assert (out, err) == ("Hello, world\n", "")
    assert view.turn_id == "t1"
    assert view.finish_reason == "stop"
    assert view.metadata["costUsd"] == 0.00123


def test_plain_output_leaves_reasoning_out() -> None:
    out, err, _ = render(turn(reasoning("hmm"), text("a", "Yes.")), color=False)
    assert (out, err) == ("Yes.\n", "")


def test_reasoning_is_dimmed_on_a_terminal_and_the_reply_starts_on_its_own_line() -> None:
    out, _, _ = render(turn(reasoning("hm", "m"), text("a", "Yes.")), color=True)
    assert out == f"{DIM}hm{UNDIM}{DIM}m{UNDIM}\nYes.\n"


def test_a_tool_call_is_one_line_with_its_result_on_stderr_when_plain() -> None:
    out, err, view = render(turn(TOOL_CALL, text("a", "It is 2026.")), color=False)
    assert out == "It is 2026.\n"
    assert err == 'tool get_current_time({}) -> {"iso": "2026-01-01"}\n'
    assert view.tools_shown == {"c1"}


def test_a_tool_call_is_a_dim_line_between_texts_on_a_terminal() -> None:
    out, err, _ = render(turn(text("a", "Let me look."), TOOL_CALL, text("b", "2026.")), True)
    line = f'{DIM}⚙ get_current_time({{}}) → {{"iso": "2026-01-01"}}{UNDIM}'
    assert out == f"Let me look.\n{line}\n2026.\n"
    assert err == ""


def test_two_text_parts_are_separated_by_a_blank_line() -> None:
    out, _, view = render(turn(text("a", "One."), text("b", "Two.")), color=False)
    assert out == "One.\n\nTwo.\n"
    assert view.text == "One.\n\nTwo."


def test_a_tool_error_shows_the_error() -> None:
    failed = {"type": "tool-output-error", "toolCallId": "c1", "errorText": "boom"}
    _, err, _ = render(turn([*TOOL_CALL[:3], failed]), color=False)
    assert err == "tool get_current_time({}) -> error: boom\n"


def test_a_tool_call_without_result_is_shown_at_the_finish() -> None:
    _, err, _ = render(turn(TOOL_CALL[:3]), color=False)
    assert err == "tool get_current_time({}) -> (no result)\n"


def test_long_tool_values_are_cut_to_one_line() -> None:
    line = tool_line("t", {"text": "word\n" * 100}, "x" * 500)
    assert "\n" not in line
    assert len(line) < 200
    assert line.endswith("…")


def test_an_error_turn_writes_the_error_on_stderr_once() -> None:
    error = {"code": "overloaded", "message": "busy", "retryable": True, "retry_after_s": 5}
    chunks = [
        {"type": "start"},
        {"type": "data-error", "id": "error", "data": error},
        {"type": "message-metadata", "messageMetadata": {"model": "m"}},
        {"type": "error", "errorText": "overloaded: busy"},
        {"type": "finish", "finishReason": "error"},
    ]
    out, err, view = render(chunks, color=False)
    assert out == ""
    assert err == "error (overloaded): busy (retryable after 5s: /retry)\n"
    assert view.error == error
    assert view.finish_reason == "error"
    assert view.metadata == {"model": "m"}


def test_an_error_chunk_alone_is_shown() -> None:
    _, err, view = render([{"type": "error", "errorText": "x: y"}], color=False)
    assert err == "error: x: y\n"
    assert view.error is not None


def test_an_error_after_text_closes_the_line_first_on_a_terminal() -> None:
    error = {"type": "data-error", "data": {"code": "internal", "message": "oops"}}
    view = TurnView(color=True)
    writes = [w for c in [*text("a", "partial")[:2], error] for w in view.render(c)]
    assert writes[-2:] == [("out", "\n"), ("err", "\x1b[31merror (internal): oops\x1b[39m\n")]


def test_statuses_are_notes() -> None:
    retrying = {"status": "retrying", "attempt": 2, "code": "overloaded", "delay_s": 0.5}
    assert status_text(retrying) == "retrying in 0.5s (overloaded, attempt 2)"
    assert status_text({"status": "queued", "position": 3}) == "queued (position 3)"
    assert status_text({"status": "steered"}) == "steered"
    assert status_text({}) is None
    _, err, _ = render(
        [{"type": "data-status", "data": {"status": "queued", "position": 1}}], False
    )
    assert err == "[queued (position 1)]\n"
    out, _, _ = render([{"type": "data-status", "data": {"status": "cancelled"}}], True)
    assert out == f"{DIM}[cancelled]{UNDIM}\n"


def test_a_steer_shows_the_message_taken_in() -> None:
    steer = {"type": "data-steer", "id": "u2", "data": {"messageId": "u2", "text": "shorter"}}
    _, err, _ = render([steer], color=False)
    assert err == "↳ steered in: shorter\n"


def test_unknown_chunks_and_context_data_show_nothing() -> None:
    chunks = [{"type": "data-context", "data": {}}, {"type": "future-thing"}, {"no": "type"}]
    assert render(chunks, color=True)[:2] == ("", "")


def test_a_stopped_turn_says_so() -> None:
    chunks = turn(text("a", "Partial"))
    chunks[-1] = {"type": "finish", "finishReason": "other"}
    out, err, _ = render(chunks, color=False, stop_requested=True)
    assert (out, err) == ("Partial\n", "[stopped]\n")


def test_usage_line_counts_cached_input_and_cost() -> None:
    assert usage_line(FINISH["messageMetadata"]) == "claude-x · 15 in, 7 out tokens · $0.0012"
    assert usage_line({}) is None


def test_catch_up_shows_only_what_the_stream_did_not() -> None:
    view = TurnView(color=False)
    for chunk in [{"type": "start", "messageMetadata": {"turnId": "t1"}}, *text("a", "Hel")[:2]]:
        view.render(chunk)
    stored = {
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Hello."},
            {
                "type": "tool-lookup",
                "toolCallId": "c9",
                "state": "output-available",
                "input": {"k": 1},
                "output": 2,
            },
            {"type": "text", "text": "Done."},
            {"type": "data-error", "data": {"code": "internal", "message": "late"}},
        ],
        "metadata": {"turnId": "t1", "finishReason": "error"},
    }
    writes = view.catch_up(stored)
    assert "".join(t for c, t in writes if c == "out") == "lo.\n\nDone.\n"
    assert "".join(t for c, t in writes if c == "err") == (
        'tool lookup({"k": 1}) -> 2\nerror (internal): late\n'
    )
    assert view.text == "Hello.\n\nDone."
    assert view.finish_reason == "error"
    assert view.catch_up(stored) == []  # finished: nothing twice


def test_history_messages_show_the_user_and_the_reply() -> None:
    user = {"role": "user", "parts": [{"type": "text", "text": "hi"}], "metadata": {}}
    reply = {
        "role": "assistant",
        "parts": [{"type": "reasoning", "text": "think"}, {"type": "text", "text": "Hello"}],
        "metadata": {},
    }
    assert message_writes(user, color=False) == [("out", "you> hi\n")]
    assert "".join(t for _, t in message_writes(reply, color=False)) == "Hello\n\n"
    shown = "".join(t for _, t in message_writes(reply, color=True))
    assert shown == f"{DIM}think{UNDIM}\nHello\n\n"
    queued = {**user, "metadata": {"status": "queued", "position": 1}}
    assert message_writes(queued, color=False) == [("out", "you> hi [queued]\n")]
