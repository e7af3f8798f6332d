"""The `anthropic` backend: the Messages API streamed, tools run here.

Each model call is one `POST /v1/messages` made by `anthropic_http` (the SDK's client holds
the configuration, its request path costs 4-5x the CPU per request: see there), and its
event stream is decoded by `anthropic_sse`, at a fraction of the CPU of the SDK's per-event
models (and far less than the `messages.stream()` helper). Retries are the turn's business,
so the SDK's client, which still makes the rare calls, is built with `max_retries=0`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import orjson

from app.backends.anthropic_errors import classify
from app.backends.anthropic_http import MAX_CONNECTIONS, MessagesHttp, proxy_for
from app.backends.anthropic_messages import to_anthropic
from app.backends.anthropic_sse import sse_events
from app.backends.errors import UpstreamError
from app.backends.events import (
    AgentEvent,
    Finished,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StepEnd,
    StepStart,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    TurnControl,
    TurnRequest,
    UsageReport,
)
from app.backends.tools import ToolError, ToolRegistry
from app.config import AnthropicSettings
from app.store.usage import Usage, estimated_tokens

EPHEMERAL = {"type": "ephemeral"}
ANTHROPIC_API = "https://api.anthropic.com"


def create_client(
    settings: AnthropicSettings, base_url: str | None = None
) -> anthropic.AsyncAnthropic:
    """An async client honouring ANTHROPIC_BASE_URL, without SDK retries.

    It runs on the SDK's aiohttp transport (the `aiohttp` extra): per streamed token it costs
    about a third of the CPU of the default httpx transport (bench/README.md). That transport
    ignores proxy variables, so when one applies to the upstream the httpx one is used."""
    key = settings.api_key.get_secret_value() if settings.api_key else "simulated"
    url = base_url or settings.base_url or ANTHROPIC_API
    limits = httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=500)
    http_client = (
        anthropic.DefaultAsyncHttpxClient(limits=limits)
        if proxy_for(url)
        else anthropic.DefaultAioHttpClient(limits=limits)
    )
    return anthropic.AsyncAnthropic(
        api_key=key,
        base_url=url,
        max_retries=0,
        timeout=anthropic.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
        http_client=http_client,
    )


def _with_breakpoints(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cache the conversation prefix: a breakpoint on the last block of the last message."""
    if not messages:
        return messages
    last = dict(messages[-1])
    content = [dict(block) for block in last["content"]]
    content[-1]["cache_control"] = EPHEMERAL
    last["content"] = content
    return [*messages[:-1], last]


class _Block:
    """A content block being streamed."""

    __slots__ = ("kind", "id", "name", "json", "signature", "text", "thinking")

    def __init__(self, kind: str, block_id: str, name: str = "") -> None:
        self.kind = kind
        self.id = block_id
        self.name = name
        self.json: list[str] = []
        self.signature: str | None = None
        self.text: list[str] = []
        self.thinking: list[str] = []


class AnthropicBackend:
    """Streams from the Messages API and runs the tool loop client-side."""

    name = "anthropic"
    # Dropping a Messages API stream loses nothing the turn has not already seen: a stop
    # cancels the attempt at once.
    stop_grace_s = 0.0
    manages_context = False  # the stored history is the context: the runner compacts it

    def __init__(
        self,
        http: MessagesHttp,
        tools: ToolRegistry,
        settings: AnthropicSettings,
        max_tool_rounds: int,
    ) -> None:
        self.http = http
        self.tools = tools
        self.model = settings.model
        self.max_tokens = settings.max_tokens
        self.system_prompt = settings.system_prompt
        self.max_tool_rounds = max_tool_rounds

    def classify(self, exc: BaseException) -> UpstreamError:
        """Map a failure of the Messages API onto the shared taxonomy."""
        return classify(exc)

    async def forget_session(self, session_id: str) -> None:
        """Nothing is kept per session."""

    async def close(self) -> None:
        """Close the connections to the upstream."""
        await self.http.close()

    def _params(self, request: TurnRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": self.max_tokens,
            "messages": _with_breakpoints(messages),
            "system": [{"type": "text", "text": self.system_prompt, "cache_control": EPHEMERAL}],
        }
        schemas = self.tools.schemas()
        if schemas:
            params["tools"] = [*schemas[:-1], {**schemas[-1], "cache_control": EPHEMERAL}]
        return params

    async def run(self, request: TurnRequest, control: TurnControl) -> AsyncIterator[AgentEvent]:
        """Stream one attempt: model calls and tool rounds until the model stops."""
        messages = to_anthropic(request.history)
        if not messages or messages[-1]["role"] != "user":
            raise UpstreamError("invalid_request", "there is no user message to answer")
        for round_no in range(self.max_tool_rounds + 1):
            blocks: list[_Block] = []
            stop_reason: str | None = None
            async for event in self._call(request, messages, round_no, blocks):
                if isinstance(event, str):
                    stop_reason = event
                else:
                    yield event
            if stop_reason != "tool_use":
                yield StepEnd()
                if stop_reason == "max_tokens":
                    yield Finished("length", "max_output_tokens")
                else:
                    yield Finished(
                        "stop" if stop_reason in ("end_turn", "stop_sequence", None) else "other"
                    )
                return
            if round_no == self.max_tool_rounds:
                raise UpstreamError(
                    "tool_loop_limit", f"stopped after {self.max_tool_rounds} tool rounds"
                )
            results: list[dict[str, Any]] = []
            for block in blocks:
                if block.kind != "tool_use":
                    continue
                result = await self._run_tool(block)
                yield result
                content = (
                    result.output
                    if isinstance(result.output, str)
                    else orjson.dumps(result.output, default=str).decode()
                )
                entry: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": block.id,
                    "content": result.error or content,
                }
                if result.error:
                    entry["is_error"] = True
                results.append(entry)
            yield StepEnd()
            # Messages sent meanwhile to steer the turn join the next call, after the results.
            steering = [{"type": "text", "text": text} for text in await control.steers()]
            messages = [
                *messages,
                {"role": "assistant", "content": _assistant_content(blocks)},
                {"role": "user", "content": [*results, *steering]},
            ]

    async def _run_tool(self, block: _Block) -> ToolResult:
        tool = self.tools.get(block.name)
        if tool is None:
            return ToolResult(block.id, None, f"unknown tool {block.name!r}")
        try:
            args = orjson.loads("".join(block.json) or "{}")
            return ToolResult(block.id, await tool.call(args))
        except (ToolError, orjson.JSONDecodeError) as exc:
            return ToolResult(block.id, None, str(exc))

    async def _call(
        self,
        request: TurnRequest,
        messages: list[dict[str, Any]],
        round_no: int,
        blocks: list[_Block],
    ) -> AsyncIterator[AgentEvent | str]:
        """One model call; yields events, then its stop reason as a plain string."""
        usage = Usage()
        reported = Usage()  # what was already reported: usage is billed as it becomes known
        stop_reason: str | None = None
        by_index: dict[int, _Block] = {}
        prefix = f"{request.turn_id[:8]}-{round_no}"
        stopped = False
        try:
            async with self.http.post({**self._params(request, messages), "stream": True}) as (
                response
            ):
                yield StepStart()
                async for event in sse_events(response.content.iter_any()):
                    kind = event["type"]
                    if kind == "content_block_delta":
                        block = by_index[event["index"]]
                        delta = event["delta"]
                        delta_type = delta["type"]
                        if delta_type == "text_delta":
                            block.text.append(delta["text"])
                            yield TextDelta(block.id, delta["text"])
                        elif delta_type == "input_json_delta":
                            block.json.append(delta["partial_json"])
                            if delta["partial_json"]:
                                yield ToolCallDelta(block.id, delta["partial_json"])
                        elif delta_type == "thinking_delta":
                            block.thinking.append(delta["thinking"])
                            yield ReasoningDelta(block.id, delta["thinking"])
                        elif delta_type == "signature_delta":
                            block.signature = delta["signature"]
                    elif kind == "content_block_start":
                        index = event["index"]
                        cb = event["content_block"]
                        if cb["type"] == "tool_use":
                            block = _Block("tool_use", cb["id"], cb["name"])
                            yield ToolCallStart(cb["id"], cb["name"])
                        elif cb["type"] == "thinking":
                            block = _Block("thinking", f"{prefix}-r{index}")
                            yield ReasoningStart(block.id)
                        elif cb["type"] == "redacted_thinking":
                            block = _Block("redacted_thinking", f"{prefix}-x{index}")
                            block.signature = cb.get("data")
                        else:
                            block = _Block("text", f"{prefix}-t{index}")
                            yield TextStart(block.id)
                        by_index[index] = block
                        blocks.append(block)
                    elif kind == "content_block_stop":
                        block = by_index[event["index"]]
                        if block.kind == "text":
                            yield TextEnd(block.id)
                        elif block.kind == "thinking":
                            yield ReasoningEnd(block.id, block.signature)
                        elif block.kind == "tool_use":
                            try:
                                parsed = orjson.loads("".join(block.json) or "{}")
                            except orjson.JSONDecodeError:
                                parsed = {"_raw": "".join(block.json)}
                            yield ToolCallReady(block.id, block.name, parsed)
                    elif kind == "message_start":
                        _take_usage(usage, event["message"].get("usage"))
                        report = _report(usage, reported, request.model)
                        report.estimate = functools.partial(_streamed_tokens, blocks)
                        yield report
                    elif kind == "message_delta":
                        stop_reason = event["delta"].get("stop_reason")
                        _take_usage(usage, event.get("usage"))
                        yield _report(usage, reported, request.model)
                    elif kind == "message_stop":
                        stopped = True
            if not stopped:
                raise UpstreamError(
                    "upstream_unavailable", "the model's stream ended before message_stop"
                )
        except Exception as exc:
            failure: UpstreamError | None = classify(exc)
        else:
            failure = None
        if failure is not None:
            raise failure
        yield stop_reason or "end_turn"


_USAGE_FIELDS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_write_tokens"),
)


def _take_usage(usage: Usage, counters: dict[str, Any] | None) -> None:
    """Take the counters the event carries (cumulative within a message; absent or null
    ones keep their value)."""
    if not counters:
        return
    for api_name, name in _USAGE_FIELDS:
        value = counters.get(api_name)
        if value is not None:
            setattr(usage, name, value)


def _streamed_tokens(blocks: list[_Block]) -> int:
    """Output tokens of a call estimated from its streamed text, thinking and tool input."""
    chars = sum(
        len(piece) for block in blocks for piece in (*block.text, *block.thinking, *block.json)
    )
    return estimated_tokens(chars)


def _report(usage: Usage, reported: Usage, model: str) -> UsageReport:
    """The usage not reported yet (the API's counters are cumulative within a message)."""
    delta = Usage(
        input_tokens=usage.input_tokens - reported.input_tokens,
        output_tokens=usage.output_tokens - reported.output_tokens,
        cache_read_tokens=usage.cache_read_tokens - reported.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens - reported.cache_write_tokens,
    )
    reported.add(delta)
    return UsageReport(delta, model)


def _assistant_content(blocks: list[_Block]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    for block in blocks:
        if block.kind == "thinking":
            content.append(
                {
                    "type": "thinking",
                    "thinking": "".join(block.thinking),
                    "signature": block.signature or "",
                }
            )
        elif block.kind == "redacted_thinking":
            content.append({"type": "redacted_thinking", "data": block.signature or ""})
        elif block.kind == "text" and "".join(block.text):
            content.append({"type": "text", "text": "".join(block.text)})
        elif block.kind == "tool_use":
            try:
                args = orjson.loads("".join(block.json) or "{}")
            except orjson.JSONDecodeError:
                args = {}
            content.append({"type": "tool_use", "id": block.id, "name": block.name, "input": args})
    return content
