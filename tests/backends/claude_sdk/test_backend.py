"""The claude_sdk backend end to end: the real bundled CLI, the fake upstream, real Postgres."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.backends.events import (
    Finished,
    ReasoningDelta,
    ReasoningEnd,
    StepEnd,
    StepStart,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    UsageReport,
)
from app.devtools.fake_upstream import FakeUpstreamHandle
from app.devtools.fake_upstream.tokens import generated_words
from tests.backends.claude_sdk.conftest import BackendFactory, collect, request, user

pytestmark = pytest.mark.claude_cli


def _text(events: list[object]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextDelta))


async def test_text_streams_token_by_token(make_backend: BackendFactory, session_id: str) -> None:
    backend = make_backend()
    events = await collect(backend, request(session_id, user("[[fake:text tokens=30 rate=60]]")))
    assert _text(events) == "".join(generated_words(30))
    assert len([e for e in events if isinstance(e, TextDelta)]) >= 10
    kinds = [type(e) for e in events if not isinstance(e, UsageReport | TextDelta)]
    assert kinds == [StepStart, TextStart, TextEnd, StepEnd, Finished]
    assert events[-1] == Finished("stop")


async def test_thinking_streams_with_its_signature(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend()
    events = await collect(
        backend, request(session_id, user("[[fake:thinking thinking=8 tokens=4]]"))
    )
    thought = "".join(e.delta for e in events if isinstance(e, ReasoningDelta))
    assert thought == "".join(generated_words(8, offset=3))
    ends = [e for e in events if isinstance(e, ReasoningEnd)]
    assert len(ends) == 1
    assert ends[0].signature
    assert len(ends[0].signature) > 20


async def test_a_tool_round_trip_through_the_registry(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend()
    prompt = '[[fake:tool name=mcp__copilot__calculate input={"expression": "6*7"}]]'
    events = await collect(backend, request(session_id, user(prompt)))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [s.name for s in starts] == ["calculate"]
    ready = [e for e in events if isinstance(e, ToolCallReady)]
    assert [(r.name, r.input) for r in ready] == [("calculate", {"expression": "6*7"})]
    results = [e for e in events if isinstance(e, ToolResult)]
    output = {"expression": "6*7", "result": 42.0}
    assert results == [ToolResult(starts[0].call_id, output)]
    assert _text(events).startswith("Tool result: ")
    assert "42.0" in _text(events)
    # the result lands in the step that asked for it; the answer is a second step
    kinds = [type(e) for e in events if isinstance(e, StepStart | StepEnd | ToolResult)]
    assert kinds == [StepStart, ToolResult, StepEnd, StepStart, StepEnd]


async def test_a_warm_client_answers_the_next_turn_in_the_same_process(
    make_backend: BackendFactory, session_id: str, fake: FakeUpstreamHandle
) -> None:
    backend = make_backend()
    first = user("first question")
    await collect(backend, request(session_id, first))
    live = backend.pool.idle[session_id]
    pid = live.pid
    assert pid is not None
    started = time.monotonic()
    events = await collect(backend, request(session_id, first, user("second question")))
    assert _text(events) == "Echo: second question"
    assert time.monotonic() - started < 2.0
    assert backend.pool.idle[session_id].pid == pid
    sent = fake.requests("/v1/messages")[-1]["json"]["messages"]
    assert "first question" in str(sent)
    assert "second question" in str(sent[-1])
