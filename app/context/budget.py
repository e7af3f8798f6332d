"""How many tokens a stored history takes, and the newest part of it that fits a budget.

The estimate is deliberately simple and a little pessimistic (3.5 characters a token, a few
tokens per message, a fixed price per image): it decides when to compact ahead of a call and
how much the DB-only rung keeps. Being wrong costs one failed call, which the ladder catches
(`prompt_too_long` moves it down a rung).

Trimming drops whole UIMessages from the oldest end. A tool call and its result live in the
same assistant message (its tool part holds both), so a pair is never split; the first
message kept is a user message, as the Messages API requires.
"""

from __future__ import annotations

from typing import Any

import orjson

CHARS_PER_TOKEN = 3.5
MESSAGE_TOKENS = 8
IMAGE_TOKENS = 1_600

UIMessage = dict[str, Any]


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if value is None:
        return 0
    return len(orjson.dumps(value, default=str))


def part_tokens(part: dict[str, Any]) -> int:
    """The tokens one UIMessage part costs the model (data parts and reasoning of earlier
    turns are not sent: they cost nothing)."""
    kind = str(part.get("type", ""))
    if kind == "text":
        chars = _chars(part.get("text"))
    elif kind == "file":
        image = str(part.get("mediaType", "")).startswith("image/")
        return IMAGE_TOKENS if image else 20
    elif kind.startswith("tool-") or kind == "dynamic-tool":
        chars = _chars(part.get("input")) + _chars(part.get("output")) + 40
    else:
        return 0
    return int(chars / CHARS_PER_TOKEN) + 1


def message_tokens(message: UIMessage) -> int:
    """The tokens one UIMessage costs the model."""
    parts = message.get("parts") or []
    return MESSAGE_TOKENS + sum(part_tokens(p) for p in parts if isinstance(p, dict))


def history_tokens(history: list[UIMessage]) -> int:
    """The tokens a history costs the model (an estimate)."""
    return sum(message_tokens(m) for m in history)


def newest_that_fit(history: list[UIMessage], budget: int) -> list[UIMessage]:
    """The newest messages whose estimate fits `budget`, starting with a user message.

    The last message (the one to answer) is always kept, even alone over the budget: the call
    then fails, and the ladder ends the turn with `context_exhausted`."""
    if not history:
        return []
    kept = [history[-1]]
    used = message_tokens(history[-1])
    for message in reversed(history[:-1]):
        cost = message_tokens(message)
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0].get("role") != "user":
        kept.pop(0)
    return kept
