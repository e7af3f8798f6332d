"""From a request and a plan to the reply's content blocks, cut at `max_tokens`.

A reply is a list of blocks, each a list of token pieces: a text or thinking piece is one word
(with its leading space), a tool input piece is 4 characters of its JSON. The output token
count is the number of pieces, so it is exact whatever the streaming granularity.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from app.devtools.fake_upstream.cache import InputUsage
from app.devtools.fake_upstream.script import ReplyPlan, find_directive, strip_directives
from app.devtools.fake_upstream.structured import requested_schema, structured_text
from app.devtools.fake_upstream.tokens import generated_words

BlockType = Literal["text", "thinking", "tool_use"]
_PIECES = re.compile(r"\s*\S+|\s+")


def new_id(prefix: str) -> str:
    """Return a fresh Anthropic-looking id such as `msg_0a1b...`."""
    return prefix + secrets.token_hex(12)


@dataclass(slots=True)
class Block:
    """One content block of a reply, as token pieces."""

    type: BlockType
    pieces: list[str]
    tool_id: str = ""
    name: str = ""
    input: Any = field(default=None)
    signature: str = ""


@dataclass(slots=True)
class Reply:
    """The content of one reply, with its stop reason and exact output tokens."""

    blocks: list[Block]
    stop_reason: str
    output_tokens: int


def last_user_message(body: dict[str, Any]) -> dict[str, Any] | None:
    """Return the last message with role `user`, if any."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def _blocks(message: dict[str, Any]) -> list[Any]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def user_texts(message: dict[str, Any]) -> list[str]:
    """Return the text of every text block of a message, in order."""
    return [
        b["text"]
        for b in _blocks(message)
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    ]


def _tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        parts = [
            str(c.get("text", "")) if c.get("type") == "text" else f"[{c.get('type')}]"
            for c in content
            if isinstance(c, dict)
        ]
        text = "\n".join(parts)
    else:
        text = "" if content is None else str(content)
    return ("Tool error: " if block.get("is_error") else "Tool result: ") + text


def choose_plan(body: dict[str, Any]) -> ReplyPlan:
    """Pick the plan of an unscripted request: schema instance, tool result, directive, echo."""
    schema = requested_schema(body)
    if schema is not None:
        return ReplyPlan(text=structured_text(schema))
    message = last_user_message(body)
    if message is None:
        return ReplyPlan()
    results = [
        b for b in _blocks(message) if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    if results:
        return ReplyPlan(text="\n".join(_tool_result_text(b) for b in results))
    for text in reversed(user_texts(message)):
        plan = find_directive(text)
        if plan is not None:
            return plan
    return ReplyPlan()


def echo_text(body: dict[str, Any]) -> str:
    """Return the default reply: `Echo: ` and the last user text without directives."""
    message = last_user_message(body)
    texts = user_texts(message) if message is not None else []
    for text in reversed(texts):
        if (stripped := strip_directives(text)) and not stripped.startswith("<system-reminder>"):
            return "Echo: " + stripped
    return "Echo."


def _split_text(text: str) -> list[str]:
    return _PIECES.findall(text)


def _text_pieces(plan: ReplyPlan, body: dict[str, Any]) -> list[str]:
    if plan.text is not None:
        return _split_text(plan.text)
    if plan.tokens is not None:
        return generated_words(plan.tokens)
    return _split_text(echo_text(body))


def _signature(thinking: str) -> str:
    return base64.b64encode(hashlib.blake2b(thinking.encode()).digest()).decode()


def _full_blocks(plan: ReplyPlan, body: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    if plan.thinking > 0:
        pieces = generated_words(plan.thinking, offset=3)
        blocks.append(Block("thinking", pieces, signature=_signature("".join(pieces))))
    if plan.kind != "tool":
        blocks.append(Block("text", _text_pieces(plan, body)))
        return blocks
    if plan.text:
        blocks.append(Block("text", _split_text(plan.text)))
    tools = body.get("tools")
    offered = (
        [str(t.get("name")) for t in tools if isinstance(t, dict)]
        if isinstance(tools, list)
        else []
    )
    name = plan.name
    if name is None:
        name = offered[0] if offered else "tool"
    elif name not in offered:
        # The same directive names a tool on every backend: `calculate` is offered to the
        # Claude Code CLI as an MCP tool, `mcp__copilot__calculate`.
        name = next((o for o in offered if o.endswith(f"__{name}")), name)
    tool_input = {} if plan.input is None else plan.input
    raw = orjson.dumps(tool_input).decode()
    pieces = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    blocks.append(Block("tool_use", pieces, new_id("toolu_"), name, tool_input))
    return blocks


def build_reply(plan: ReplyPlan, body: dict[str, Any]) -> Reply:
    """Build the reply blocks for `plan`, cut at the request's `max_tokens`."""
    blocks = _full_blocks(plan, body)
    max_tokens = body.get("max_tokens")
    budget = max_tokens if isinstance(max_tokens, int) and max_tokens >= 0 else None
    has_tool = any(b.type == "tool_use" for b in blocks)
    total = sum(len(b.pieces) for b in blocks)
    if budget is None or total <= budget:
        return Reply(blocks, "tool_use" if has_tool else "end_turn", total)
    kept: list[Block] = []
    left = budget
    for block in blocks:
        if left <= 0:
            break
        if len(block.pieces) > left:
            block.pieces = block.pieces[:left]
            if block.type == "tool_use":
                block.input = {}
        left -= len(block.pieces)
        kept.append(block)
    return Reply(kept, "max_tokens", budget)


def usage_fields(usage: InputUsage, output_tokens: int) -> dict[str, int]:
    """Return the four usage numbers of a response."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": output_tokens,
    }


def message_json(
    model: str, reply: Reply | None, usage: InputUsage, output_tokens: int | None = None
) -> dict[str, Any]:
    """Return a Message object: complete for `reply`, or the empty one of `message_start`."""
    content: list[dict[str, Any]] = []
    for block in reply.blocks if reply is not None else []:
        joined = "".join(block.pieces)
        if block.type == "text":
            content.append({"type": "text", "text": joined})
        elif block.type == "thinking":
            content.append({"type": "thinking", "thinking": joined, "signature": block.signature})
        else:
            content.append(
                {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": block.input}
            )
    if output_tokens is None:
        output_tokens = reply.output_tokens if reply is not None else 0
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.stop_reason if reply is not None else None,
        "stop_sequence": None,
        "usage": {**usage_fields(usage, output_tokens), "service_tier": "standard"},
    }
