"""The context ladder on the Claude SDK backend, served: the real CLI, the fake upstream.

The CLI compacts its own transcript (at `COPILOT_COMPACT_AT` of the window), and on a 400
"prompt is too long" it compacts and retries once by itself; only when that fails too does
the turn reach the ladder, which never reuses that CLI session: the compacted rung is a
fresh CLI session seeded with our stored summary and the newest messages.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from app.store.compactions import SUMMARY_INTRO
from tests.context.chat import long_conversation, markers, say
from tests.serving import Served, serve, upstream_env

TOO_SMALL = {"kind": "echo", "context": 50}


@pytest.fixture(scope="module")
def roots() -> Iterator[list[Path]]:
    """Short workspace roots (the CLI's socket path must fit in 107 bytes)."""
    made = [Path(tempfile.mkdtemp(prefix="ws", dir="/tmp")) for _ in range(3)]
    yield made
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


def _env(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, root: Path, **extra: str
) -> dict[str, str]:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_BACKEND="claude_sdk",
        COPILOT_WORKSPACES_DIR=str(root),
        **extra,
    )


@pytest.fixture(scope="module")
def replicas(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    roots: list[Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Served]]:
    with (
        serve(_env(fake, database_url, redis_url, roots[0]), tmp_path_factory.mktemp("a")) as a,
        serve(_env(fake, database_url, redis_url, roots[1]), tmp_path_factory.mktemp("b")) as b,
    ):
        yield a, b


def test_a_cli_stuck_on_prompt_too_long_recovers_compacted_and_continues_on_another_replica(
    replicas: tuple[Served, Served], fake: FakeUpstreamHandle
) -> None:
    a, b = replicas
    sid = f"sdk-ladder-{uuid.uuid4().hex[:8]}"
    with a.client() as http:
        for i in range(4):
            say(http, sid, f"message {i}: the early part of this conversation")
        fake.reset()
        # The CLI's call fails; it compacts (a summary call) and tries again, twice (CLI
        # 2.1.330), then gives up: the turn climbs to the compacted rung, whose calls pass.
        fake.enqueue(TOO_SMALL, {"kind": "echo"}, TOO_SMALL, {"kind": "echo"}, TOO_SMALL)
        result = say(http, sid, "the question after the stuck one")
        assert result.error is None
        assert result.text.endswith("the question after the stuck one")
        turn = http.get(f"/api/v1/sessions/{sid}/turns").json()["turns"][-1]
        assert [x["context_rung"] for x in turn["attempt_log"]] == [1, 2]
        assert turn["attempt_log"][0]["error_code"] == "prompt_too_long"
        methods = [m["method"] for m in markers(http, sid)]
        assert methods[-1] == "summary"
        seeded = str(fake.requests("/v1/messages")[-1]["json"]["messages"])
        assert SUMMARY_INTRO in seeded
        assert "message 0" not in seeded
    fake.reset()
    with b.client() as http:  # B never saw the session: it resumes the compacted transcript
        result = say(http, sid, "and on the other replica")
    assert result.error is None
    sent = str(fake.requests("/v1/messages")[-1]["json"]["messages"])
    assert SUMMARY_INTRO in sent
    assert "message 0" not in sent


def test_a_lost_transcript_is_rebuilt_from_the_whole_stored_history(
    replicas: tuple[Served, Served], fake: FakeUpstreamHandle, database_url: str
) -> None:
    # A turn reads only the newest stored messages; a fresh CLI is seeded with all of them.
    a, _ = replicas
    sid = f"sdk-lost-{uuid.uuid4().hex[:8]}"
    with a.client() as http:
        for i in range(3):
            say(http, sid, f"message {i}: before the transcript was lost")

        async def lose() -> None:
            conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
            try:
                await conn.execute("DELETE FROM transcript_entries WHERE session_id = $1", sid)
            finally:
                await conn.close()

        asyncio.run(lose())
        fake.reset()
        result = say(http, sid, "do you remember?")  # on A, whose warm CLI is now stale
    assert result.error is None
    sent = str(fake.requests("/v1/messages")[-1]["json"]["messages"])
    assert all(f"message {i}" in sent for i in range(3))


def test_a_message_the_cli_cannot_fit_ends_with_context_exhausted_and_the_next_one_works(
    replicas: tuple[Served, Served], fake: FakeUpstreamHandle
) -> None:
    a, _ = replicas
    sid = f"sdk-big-{uuid.uuid4().hex[:8]}"
    with a.client() as http:
        say(http, sid, "hello")
        result = say(http, sid, "a message no window takes [[fake:echo context=50]]")
        assert result.error is not None
        assert result.error["code"] == "context_exhausted"
        after = say(http, sid, "a normal message")
        assert after.error is None
        assert after.text.endswith("a normal message")


def test_a_long_conversation_with_tools_never_fails_and_the_cli_compacts_now_and_then(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    roots: list[Path],
    tmp_path: Path,
) -> None:
    # The CLI takes no window under 100,000 tokens: it compacts at 10% of it instead.
    env = _env(
        fake,
        database_url,
        redis_url,
        roots[2],
        COPILOT_CONTEXT_WINDOWS='{"claude": 100000}',
        COPILOT_COMPACT_AT="0.1",
    )
    sid = f"sdk-long-{uuid.uuid4().hex[:8]}"
    fake.reset()
    with serve(env, tmp_path) as served, served.client() as http:
        long_conversation(http, sid, 200, filler=6)
        compactions = markers(http, sid)
    assert 1 <= len(compactions) <= 40
    assert all(m["method"] == "cli" for m in compactions)
    assert all(m["tokensAfter"] < m["tokensBefore"] for m in compactions if "tokensAfter" in m)
