"""Where a compaction's verbatim tail starts."""

from __future__ import annotations

from typing import Any

from app.context.compactor import split_tail


def _message(role: str, i: int, chars: int = 40) -> dict[str, Any]:
    return {"id": f"{role}{i}", "role": role, "parts": [{"type": "text", "text": "x" * chars}]}


def _conversation(turns: int, chars: int = 40) -> list[dict[str, Any]]:
    history = []
    for i in range(turns):
        history += [_message("user", i, chars), _message("assistant", i, chars)]
    return [*history, _message("user", turns, chars)]


def test_the_tail_keeps_the_newest_messages_and_starts_with_the_user() -> None:
    history = _conversation(5)
    start = split_tail(history, keep=4, budget=10_000)
    assert history[start]["role"] == "user"
    assert len(history) - start <= 4
    assert start > 0


def test_the_tail_never_passes_its_budget_but_keeps_the_last_message() -> None:
    history = _conversation(5, chars=3_500)  # ~1,000 tokens a message
    start = split_tail(history, keep=4, budget=1_500)
    assert start == len(history) - 1


def test_a_history_of_one_message_has_nothing_to_compact() -> None:
    assert split_tail([_message("user", 0)], keep=4, budget=100) == 0
