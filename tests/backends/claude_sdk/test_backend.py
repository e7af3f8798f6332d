"""The claude_sdk backend end to end: the real bundled CLI, the fake upstream, real Postgres."""

from __future__ import annotations

import base64
import struct
import time
import uuid
import zlib

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
from app.store.transcripts import PostgresTranscripts
from tests.backends.claude_sdk.conftest import BackendFactory, collect, request, user

pytestmark = pytest.mark.claude_cli


def _png() -> bytes:
    """A valid 1x1 PNG (the CLI reads an image's header before sending it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


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


async def test_a_second_replica_resumes_the_session_from_postgres(
    make_backend: BackendFactory, session_id: str, fake: FakeUpstreamHandle
) -> None:
    first = user("remember the word pelican")
    await collect(make_backend("replica-a"), request(session_id, first))
    other = make_backend("replica-b")  # another workspace root: another project key
    events = await collect(other, request(session_id, first, user("which word?")))
    assert _text(events) == "Echo: which word?"
    sent = fake.requests("/v1/messages")[-1]["json"]["messages"]
    assert "remember the word pelican" in str(sent)
    assert "Echo: remember the word pelican" in str(sent)


async def test_a_stale_warm_client_is_not_used(
    make_backend: BackendFactory, session_id: str, fake: FakeUpstreamHandle
) -> None:
    a, b = make_backend("replica-a"), make_backend("replica-b")
    m1, m2, m3 = user("one alpha"), user("two beta"), user("three gamma")
    await collect(a, request(session_id, m1))
    stale_pid = a.pool.idle[session_id].pid
    await collect(b, request(session_id, m1, m2))  # answered on the other replica
    events = await collect(a, request(session_id, m1, m2, m3))
    assert _text(events) == "Echo: three gamma"
    assert a.pool.idle[session_id].pid != stale_pid
    sent = str(fake.requests("/v1/messages")[-1]["json"]["messages"])
    assert "one alpha" in sent
    assert "two beta" in sent


async def test_usage_adds_up_across_a_resume_and_never_uses_total_cost(
    make_backend: BackendFactory, session_id: str, fake: FakeUpstreamHandle
) -> None:
    fake.reset()
    m1, m2 = user("[[fake:text tokens=7]]"), user("[[fake:text tokens=9]]")
    first = await collect(make_backend("replica-a"), request(session_id, m1))
    second = await collect(make_backend("replica-b"), request(session_id, m1, m2))
    for events, tokens in ((first, 7), (second, 9)):
        reports = [e.usage for e in events if isinstance(e, UsageReport)]
        assert sum(u.output_tokens for u in reports) == tokens
    billed = [r for r in fake.requests("/v1/messages") if r["status"] == 200]
    assert len(billed) == 2


async def test_a_missing_transcript_starts_a_fresh_session_seeded_with_the_history(
    make_backend: BackendFactory, session_id: str, fake: FakeUpstreamHandle
) -> None:
    history = [
        user("my name is Ada"),
        {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "Hello Ada"}]},
        user("what is my name?"),
    ]
    req = request(session_id, *history)
    events = await collect(make_backend(), req)
    assert events[-1] == Finished("stop")
    assert req.extra["fresh_session"] is True
    sent = str(fake.requests("/v1/messages")[-1]["json"]["messages"])
    assert "my name is Ada" in sent
    assert "Hello Ada" in sent


async def test_an_image_reaches_the_model_and_another_file_lands_in_the_workspace(
    make_backend: BackendFactory, session_id: str, fake: FakeUpstreamHandle
) -> None:
    png = base64.b64encode(_png()).decode()
    message = user("look at these")
    message["parts"] += [
        {"type": "file", "mediaType": "image/png", "url": f"data:image/png;base64,{png}"},
        {"type": "file", "mediaType": "text/csv", "filename": "../../data.csv",
         "url": "data:text/csv;base64," + base64.b64encode(b"a,b\n1,2\n").decode()},
    ]  # fmt: skip
    backend = make_backend()
    events = await collect(backend, request(session_id, message))
    assert events[-1] == Finished("stop")
    sent = fake.requests("/v1/messages")[-1]["json"]["messages"]
    content = [b for m in sent if m["role"] == "user" for b in m["content"]]
    images = [b for b in content if b.get("type") == "image"]
    assert len(images) == 1
    assert images[0]["source"]["media_type"] == "image/png"
    assert "uploads/data.csv" in str(content)
    saved = backend.workspaces.for_session(session_id).path / "uploads" / "data.csv"
    assert saved.read_bytes() == b"a,b\n1,2\n"


async def test_an_unreadable_transcript_starts_a_fresh_session_seeded_with_the_history(
    make_backend: BackendFactory,
    session_id: str,
    fake: FakeUpstreamHandle,
    transcripts: PostgresTranscripts,
) -> None:
    cli_id = str(uuid.uuid4())
    garbage = [{"type": "user", "sessionId": cli_id, "uuid": "not-a-uuid", "message": 7}]
    await transcripts.fresh(session_id, None).append(
        {"project_key": "p", "session_id": cli_id}, garbage
    )
    history = [
        user("the secret is tangerine"),
        {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "Noted."}]},
        user("what is the secret?"),
    ]
    req = request(session_id, *history)
    events = await collect(make_backend(), req)
    assert events[-1] == Finished("stop")
    assert "tangerine" in str(fake.requests("/v1/messages")[-1]["json"]["messages"])
    assert req.extra.get("fresh_session") is True
    position = await transcripts.position(session_id)
    assert position is not None
    assert position.generation == 1
