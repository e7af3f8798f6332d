"""Deterministic token estimate of a Messages request, and the words a reply is made of.

The rule (documented in docs/fake-upstream.md): a request is cut into units, in the order the
real API caches them: each tool definition, each system block, then each content block of each
message. A text unit (a string `system`, a string `content`, a `text` block) is measured by
its text; any other unit by its compact JSON (UTF-8 bytes), `cache_control` removed. A unit
costs ceil(chars / 4) tokens, at least 1, and every message adds 3 tokens for its framing.

Each unit boundary also gets a hash of everything up to it (and the model), which is what the
prompt cache compares (see `cache.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

MESSAGE_OVERHEAD_TOKENS = 3
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Boundary:
    """The end of one unit: tokens so far, prefix hash, and whether it is a cache breakpoint."""

    tokens: int
    digest: bytes
    breakpoint: bool


@dataclass(frozen=True, slots=True)
class InputEstimate:
    """The estimated input tokens of a request and its unit boundaries."""

    total: int
    boundaries: tuple[Boundary, ...]


def _unit_cost(chars: int) -> int:
    return max(1, -(-chars // CHARS_PER_TOKEN))


def _without_cache_control(block: dict[str, Any]) -> dict[str, Any]:
    if "cache_control" not in block:
        return block
    return {k: v for k, v in block.items() if k != "cache_control"}


def _units(body: dict[str, Any]) -> list[tuple[int, bytes, bool]]:
    """Return (tokens, identity bytes, is_breakpoint) for every unit, in cache order."""
    units: list[tuple[int, bytes, bool]] = []

    def add_block(block: Any, overhead: int = 0) -> None:
        if isinstance(block, str):
            raw = block.encode()
            units.append((_unit_cost(len(block)) + overhead, b"s" + raw, False))
            return
        if not isinstance(block, dict):
            raw = orjson.dumps(block)
            units.append((_unit_cost(len(raw)) + overhead, raw, False))
            return
        clean = _without_cache_control(block)
        raw = orjson.dumps(clean, option=orjson.OPT_SORT_KEYS)
        text = clean.get("text") if clean.get("type") == "text" else None
        chars = len(text) if isinstance(text, str) else len(raw)
        units.append((_unit_cost(chars) + overhead, raw, "cache_control" in block))

    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            add_block(tool)
    system = body.get("system")
    if isinstance(system, str) and system:
        add_block(system)
    elif isinstance(system, list):
        for block in system:
            add_block(block)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            role = str(message.get("role", ""))
            units.append((MESSAGE_OVERHEAD_TOKENS, b"role:" + role.encode(), False))
            content = message.get("content")
            if isinstance(content, list):
                for block in content:
                    add_block(block)
            elif content is not None:
                add_block(content)
    if isinstance(body.get("cache_control"), dict) and units:
        # Automatic caching: a top-level cache_control marks the last unit.
        tokens, raw, _ = units[-1]
        units[-1] = (tokens, raw, True)
    return units


def estimate_input(body: dict[str, Any]) -> InputEstimate:
    """Estimate the input tokens of a Messages request body (system + messages + tools)."""
    running = hashlib.blake2b(digest_size=16)
    running.update(str(body.get("model", "")).encode())
    total = 0
    boundaries: list[Boundary] = []
    for tokens, raw, is_breakpoint in _units(body):
        total += tokens
        running.update(len(raw).to_bytes(8, "little"))
        running.update(raw)
        boundaries.append(Boundary(total, running.copy().digest(), is_breakpoint))
    return InputEstimate(total=total, boundaries=tuple(boundaries))


_VOCABULARY = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "streaming",
    "tokens",
    "arrive",
    "in",
    "order",
    "every",
    "word",
    "counts",
    "as",
    "one",
    "token",
    "and",
    "the",
    "fake",
    "upstream",
    "keeps",
    "its",
    "promises",
    "about",
    "usage",
    "numbers",
    "so",
    "that",
    "tests",
    "can",
    "check",
    "them",
    "exactly",
    "without",
    "guessing",
    "what",
    "a",
    "model",
    "would",
    "say",
]


def generated_words(count: int, offset: int = 0) -> list[str]:
    """Return `count` deterministic word pieces (one token each) that join into a sentence."""
    pieces: list[str] = []
    size = len(_VOCABULARY)
    for i in range(offset, offset + count):
        word = _VOCABULARY[(i * 7) % size]
        if i == offset:
            word = word.capitalize()
        pieces.append(word if i == offset else " " + word)
    if pieces:
        pieces[-1] += "."
    return pieces
