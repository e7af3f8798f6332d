"""The claude_sdk backend when things go wrong: API errors, a killed CLI, stops, clean-up."""

from __future__ import annotations

import asyncio
import os
import signal

import psutil
import pytest

from app.backends.errors import UpstreamError
from app.backends.events import (
    AgentEvent,
    Finished,
    StatusNote,
    StepEnd,
    TextDelta,
    TextEnd,
    ToolCallReady,
    ToolResult,
    TurnControl,
)
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.backends.claude_sdk.conftest import (
    BackendFactory,
    NapLog,
    Run,
    cli_processes,
    collect,
    request,
    user,
)

pytestmark = pytest.mark.claude_cli


@pytest.mark.parametrize(
    ("directive", "code"),
    [
        ("[[fake:error status=401 times=1]]", "auth_failed"),
        ("[[fake:error status=429 times=1]]", "rate_limited"),
        ("[[fake:error status=529 times=1]]", "overloaded"),
        ("[[fake:error status=400]]", "invalid_request"),
    ],
)
async def test_each_api_error_maps_onto_the_taxonomy(
    make_backend: BackendFactory, session_id: str, directive: str, code: str
) -> None:
    backend = make_backend()
    events: list[AgentEvent] = []
    message = user(directive)
    with pytest.raises(UpstreamError) as caught:
        await collect(backend, request(session_id, message), into=events)
    assert caught.value.code == code
    assert backend.classify(caught.value) is caught.value
    assert not [e for e in events if isinstance(e, TextDelta)]  # the CLI's own text never shows
    # an API error before anything visible leaves nothing behind: no CLI, no stored entry
    await backend.pool.drain()
    assert session_id not in backend.pool.idle
    assert not backend.pool.busy
    assert await backend.transcripts.position(session_id) is None
    if code != "invalid_request":  # the error fires once: the runner's retry is answered
        retried = await collect(backend, request(session_id, message))
        assert [e for e in retried if isinstance(e, TextDelta)]


async def test_a_killed_cli_ends_the_turn_retryably_and_the_next_turn_works(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend()
    first = user("hello")
    await collect(backend, request(session_id, first))
    pid = backend.pool.idle[session_id].pid
    assert pid is not None
    run = Run(backend, request(session_id, first, user("[[fake:text tokens=400 rate=40]]")))
    await run.seen(TextDelta)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(UpstreamError) as caught:
        await run.task
    assert caught.value.code == "upstream_unavailable"
    assert caught.value.retryable
    assert session_id not in backend.pool.idle
    assert not backend.pool.busy
    follow = await collect(backend, request(session_id, first, user("still there?")))
    assert follow[-1] == Finished("stop")
    assert backend.pool.idle[session_id].pid != pid


async def test_stop_mid_text_interrupts_and_the_client_stays_usable(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend()
    control = TurnControl()
    req = request(session_id, user("[[fake:text tokens=2000 rate=50]]"))
    run = Run(backend, req, control)
    await run.seen(TextDelta)
    live = next(iter(backend.pool.busy))
    control.request_stop("stopped")
    async with asyncio.timeout(backend.stop_grace_s):
        await run.task  # ends by itself, no cancel
    events = run.events
    assert isinstance(events[-1], Finished)
    assert any(isinstance(e, TextEnd) for e in events)
    assert any(isinstance(e, StepEnd) for e in events)
    assert backend.pool.idle[session_id] is live
    follow = await collect(backend, request(session_id, req.history[0], user("next")))
    assert follow[-1] == Finished("stop")
    assert backend.pool.idle[session_id].pid == live.pid


async def test_stop_mid_tool_interrupts_the_running_tool(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend()
    control = TurnControl()
    NapLog.steps = []
    NapLog.started = asyncio.Event()
    req = request(session_id, user('[[fake:tool name=mcp__copilot__nap input={"seconds": 60}]]'))
    run = Run(backend, req, control)
    await run.seen(ToolCallReady)
    async with asyncio.timeout(10):
        await NapLog.started.wait()
    control.request_stop("stopped")
    async with asyncio.timeout(backend.stop_grace_s):
        await run.task
    assert isinstance(run.events[-1], Finished)
    assert NapLog.steps == ["started", "cancelled"]
    results = [e for e in run.events if isinstance(e, ToolResult)]
    assert len(results) == 1
    assert results[0].error == "The tool call was stopped."  # its part closed, as an error
    assert session_id in backend.pool.idle
    follow = await collect(backend, request(session_id, req.history[0], user("next")))
    assert follow[-1] == Finished("stop")


async def test_no_cli_process_is_left_after_forget_session_and_close(
    make_backend: BackendFactory, session_id: str, transcripts: object
) -> None:
    backend = make_backend()
    await collect(backend, request(session_id, user("one")))
    pid = backend.pool.idle[session_id].pid
    assert pid is not None
    assert psutil.pid_exists(pid)
    await backend.forget_session(session_id)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (backend.workspaces.root / session_id).exists()  # type: ignore[attr-defined]
    await collect(backend, request(session_id, user("two")))
    assert cli_processes()
    await backend.close()
    assert not [p for p in cli_processes() if p.status() != psutil.STATUS_ZOMBIE]


async def test_a_silent_cli_ends_the_turn_as_stalled(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend(idle_timeout_s=1.0)
    with pytest.raises(UpstreamError) as caught:
        await collect(backend, request(session_id, user("[[fake:text delay=4]]")))
    assert caught.value.code == "agent_stalled"
    assert not backend.pool.busy
    assert session_id not in backend.pool.idle


async def test_repeated_failing_empty_tool_calls_trip_the_breaker(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend(max_empty_tool_calls=1)
    prompt = "[[fake:tool name=mcp__copilot__calculate input={}]]"
    with pytest.raises(UpstreamError) as caught:
        await collect(backend, request(session_id, user(prompt)))
    assert caught.value.code == "agent_stalled"


async def test_a_retried_attempt_does_not_send_the_user_message_twice(
    make_backend: BackendFactory, session_id: str, fake: FakeUpstreamHandle
) -> None:
    backend = make_backend()
    await collect(backend, request(session_id, user("hello")))
    req = request(session_id, user("[[fake:error status=529]] unique-words-here"))
    for _ in range(2):  # the runner's retry runs the same request again
        with pytest.raises(UpstreamError):
            await collect(backend, req)
    sent = fake.requests("/v1/messages")[-1]["json"]["messages"]
    assert str(sent).count("unique-words-here") == 1  # the failed attempt was rolled back
    assert "hello" in str(sent)  # and what came before it was not


async def test_prompt_too_long_after_history_shows_the_cli_compacting_first(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend()
    first = user("hello there")
    await collect(backend, request(session_id, first))
    events: list[AgentEvent] = []
    long = user("[[fake:text context=50]] " + "word " * 80)
    with pytest.raises(UpstreamError) as caught:
        await collect(backend, request(session_id, first, long), into=events)
    assert caught.value.code == "prompt_too_long"
    assert StatusNote("compacting", {}) in events
