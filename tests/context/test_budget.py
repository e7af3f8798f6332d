"""Token estimates of stored histories, and the newest part of a history that fits."""

from __future__ import annotations

from typing import Any

from app.context.budget import (
    IMAGE_TOKENS,
    history_tokens,
    message_tokens,
    newest_that_fit,
    part_tokens,
)


def _user(text: str, i: int = 0) -> dict[str, Any]:
    return {"id": f"u{i}", "role": "user", "parts": [{"type": "text", "text": text}]}


def _assistant(text: str, i: int = 0, tool: bool = False) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "step-start"}]
    if tool:
        parts.append({"type": "tool-calculate", "toolCallId": f"c{i}", "state": "output-available",
                      "input": {"expression": "6*7"}, "output": {"result": 42}})  # fmt: skip
    parts.append({"type": "text", "text": text})
    return {"id": f"a{i}", "role": "assistant", "parts": parts}


def test_text_costs_about_a_token_per_three_and_a_half_characters() -> None:
    assert part_tokens({"type": "text", "text": "x" * 350}) == 101
    image = {"type": "file", "mediaType": "image/png", "url": "data:..."}
    assert part_tokens(image) == IMAGE_TOKENS


def test_parts_the_model_never_sees_cost_nothing() -> None:
    assert part_tokens({"type": "data-context", "data": {"method": "summary"}}) == 0
    assert part_tokens({"type": "step-start"}) == 0
    assert part_tokens({"type": "reasoning", "text": "x" * 1000}) == 0


def test_a_tool_call_costs_its_input_and_output() -> None:
    plain, with_tool = _assistant("ok"), _assistant("ok", tool=True)
    assert message_tokens(with_tool) > message_tokens(plain)


def test_the_newest_messages_that_fit_start_with_a_user_message() -> None:
    history = []
    for i in range(10):
        history += [_user("question " * 20, i), _assistant("answer " * 20, i, tool=i % 2 == 0)]
    history.append(_user("last", 10))
    budget = history_tokens(history[-4:]) + 1
    kept = newest_that_fit(history, budget)
    assert kept[0]["role"] == "user"
    assert kept[-1]["id"] == "u10"
    assert history_tokens(kept) <= budget
    assert kept == history[-len(kept) :]  # whole messages, newest first: no pair is split


def test_the_message_to_answer_is_kept_even_alone_over_the_budget() -> None:
    big = _user("x" * 10_000)
    assert newest_that_fit([_user("a"), _assistant("b"), big], 10) == [big]
    assert newest_that_fit([], 10) == []
