"""The context ladder on the claude_sdk backend: the real bundled CLI, the fake upstream, real
Postgres. Rungs 2 and 3 start a fresh CLI from the runner's context, a CLI stuck on
`prompt_too_long` is never used again, and the CLI's own compactions are markers."""

from __future__ import annotations

from typing import Any

import psutil
import pytest

from app.backends.errors import UpstreamError
from app.backends.events import AgentEvent, ContextChange, Finished, TextDelta, TurnRequest
from app.config import ContextSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from app.store.transcripts import PostgresTranscripts
from tests.backends.claude_sdk.conftest import MODEL, BackendFactory, collect, request, user

pytestmark = pytest.mark.claude_cli


def _assistant(text: str) -> dict[str, Any]:
    return {"id": f"a-{text[:8]}", "role": "assistant", "parts": [{"type": "text", "text": text}]}


def _text(events: list[AgentEvent]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextDelta))


def _sent_since(fake: FakeUpstreamHandle, count: int) -> str:
    """What the model was sent in the requests after the first `count`."""
    return str([r["json"]["messages"] for r in fake.requests("/v1/messages")[count:]])


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


RUNG_HISTORIES = {
    2: [user("Summary of the conversation so far: the user chose the word tangerine.")],
    3: [user("my word is tangerine"), _assistant("Noted: tangerine.")],
}


@pytest.mark.parametrize("rung", [2, 3])
async def test_a_lower_rung_answers_from_the_history_in_a_fresh_cli_even_when_one_is_warm(
    make_backend: BackendFactory,
    session_id: str,
    fake: FakeUpstreamHandle,
    transcripts: PostgresTranscripts,
    rung: int,
) -> None:
    backend = make_backend()
    await collect(backend, request(session_id, user("my word is pelican")))
    warm_pid = backend.pool.idle[session_id].pid
    assert warm_pid is not None
    before = await transcripts.position(session_id)
    assert before is not None
    sent = len(fake.requests("/v1/messages"))
    history = [*RUNG_HISTORIES[rung], user("which word?")]
    req = TurnRequest(session_id, "turn-rung", history, MODEL, context_rung=rung)
    events = await collect(backend, req)
    assert events[-1] == Finished("stop")
    assert _text(events) == "Echo: which word?"
    assert "fresh_session" not in req.extra  # the runner records the rung itself
    model_saw = _sent_since(fake, sent)
    assert "tangerine" in model_saw
    assert "pelican" not in model_saw  # the old transcript is not used
    live = backend.pool.idle[session_id]
    assert live.pid != warm_pid
    await backend.pool.drain()
    assert _gone(warm_pid)
    after = await transcripts.position(session_id)
    assert after is not None
    assert after.generation == before.generation + 1
    # the fresh CLI is the session's warm one from now on
    follow = await collect(backend, request(session_id, *history, _assistant("x"), user("more")))
    assert follow[-1] == Finished("stop")
    assert backend.pool.idle[session_id].pid == live.pid


async def test_a_cli_that_ends_a_turn_with_prompt_too_long_is_never_used_again(
    make_backend: BackendFactory, session_id: str
) -> None:
    backend = make_backend()
    first = user("hello there")
    await collect(backend, request(session_id, first))
    stuck_pid = backend.pool.idle[session_id].pid
    assert stuck_pid is not None
    too_long = request(session_id, first, user("[[fake:text context=50]] " + "word " * 80))
    with pytest.raises(UpstreamError) as caught:
        await collect(backend, too_long)
    # (the CLI compacted and retried by itself first; its compacted transcript still holds the
    # message with the directive, so it can never fit again)
    assert caught.value.code == "prompt_too_long"
    assert session_id not in backend.pool.idle
    assert not backend.pool.busy
    await backend.pool.drain()
    assert _gone(stuck_pid)
    # the runner's next rung (the directive that forced the failure left out of its context)
    history = [user("Summary: the user said hello there."), user("short again")]
    retry = TurnRequest(session_id, too_long.turn_id, history, MODEL, context_rung=2)
    events = await collect(backend, retry)
    assert events[-1] == Finished("stop")
    assert _text(events) == "Echo: short again"  # the message itself, not the retry note
    assert backend.pool.idle[session_id].pid not in (None, stuck_pid)


async def test_a_compaction_by_the_cli_is_a_context_change_and_its_summary_is_not_shown(
    make_backend: BackendFactory, session_id: str
) -> None:
    # The CLI compacts at 1% of the window (~2,000 tokens): after two or three long turns.
    backend = make_backend(context=ContextSettings(compact_at=0.01))
    history: list[dict[str, Any]] = []
    changes: list[ContextChange] = []
    for turn in range(5):
        history.append(user(f"turn {turn} " + "lorem ipsum dolor " * 100))
        events = await collect(backend, request(session_id, *history))
        assert events[-1] == Finished("stop")
        assert _text(events).startswith(f"Echo: turn {turn} lorem")  # never the summary
        changes += [e for e in events if isinstance(e, ContextChange)]
        if changes:
            break
        history.append(_assistant(_text(events)))
    assert len(changes) == 1
    change = changes[0]
    assert (change.method, change.trigger) == ("cli", "auto")
    assert change.tokens_before is not None
    assert change.tokens_after is not None
    assert change.tokens_before > change.tokens_after > 0
    assert session_id in backend.pool.idle  # a compaction leaves the CLI warm


async def test_the_cli_compacts_at_the_window_and_threshold_of_the_context_settings(
    make_backend: BackendFactory, session_id: str
) -> None:
    context = ContextSettings(
        context_windows={"claude": 200_000, "claude-test": 150_000}, compact_at=0.75
    )
    backend = make_backend(context=context)
    await collect(backend, request(session_id, user("hello")))
    pid = backend.pool.idle[session_id].pid
    assert pid is not None
    env = psutil.Process(pid).environ()
    assert env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "150000"
    assert env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "75"
