"""The Claude Agent SDK backend on two `copilot serve` replicas: the real CLI on each, one
Postgres holding the transcripts, the fake upstream as the model.

A session moves A -> B -> A: B never saw it and resumes it from Postgres; A's warm client is
then stale (B answered in between) and must not answer from what it remembers. Deleting the
session, and stopping the servers, leaves no CLI process and no workspace behind.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, assert_well_formed, serve, stream, turns, upstream_env, wait_until


def _cli_processes(served: Served) -> list[psutil.Process]:
    """The Claude Code CLI processes this server started."""
    try:
        children = psutil.Process(served.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "claude" in " ".join(child.cmdline()).lower():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="module")
def roots() -> Iterator[tuple[Path, Path]]:
    """Short workspace roots (the CLI's socket path must fit in 107 bytes)."""
    made = [Path(tempfile.mkdtemp(prefix="ws", dir="/tmp")) for _ in range(2)]
    yield made[0], made[1]
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def replicas(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    roots: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Served]]:
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_BACKEND="claude_sdk",
        COPILOT_HEARTBEAT_S="0.5",
        COPILOT_FLUSH_INTERVAL_S="0.2",
    )
    with (
        serve({**env, "COPILOT_WORKSPACES_DIR": str(roots[0])}, tmp_path_factory.mktemp("a")) as a,
        serve({**env, "COPILOT_WORKSPACES_DIR": str(roots[1])}, tmp_path_factory.mktemp("b")) as b,
    ):
        yield a, b


def _chat(served: Served, session_id: str, text: str) -> Any:
    with served.client() as http:
        result = stream(http, "POST", "/api/v1/chat", json={"id": session_id, "message": text})
    assert_well_formed(result)
    assert result.chunks[-1]["finishReason"] == "stop", result.chunks
    return result


def _last_prompt(fake: FakeUpstreamHandle) -> str:
    return str(fake.requests("/v1/messages")[-1]["json"]["messages"])


def test_a_session_moves_between_replicas_and_a_stale_warm_client_is_not_used(
    replicas: tuple[Served, Served], fake: FakeUpstreamHandle
) -> None:
    a, b = replicas
    sid = f"sdk-{uuid.uuid4().hex[:10]}"
    first = _chat(a, sid, "alpha-one")
    assert first.text == "Echo: alpha-one"
    warm_pids = {p.pid for p in _cli_processes(a)}
    assert warm_pids, "replica A keeps its CLI warm for the session"

    _chat(b, sid, "bravo-two")  # B never saw the session: it resumes it from Postgres
    assert "alpha-one" in _last_prompt(fake)

    _chat(a, sid, "charlie-three")  # A's warm client last saw alpha only: it is stale
    prompt = _last_prompt(fake)
    assert "alpha-one" in prompt
    assert "bravo-two" in prompt
    with a.client() as http:
        listed = turns(http, sid)
    assert [t["status"] for t in listed] == ["completed"] * 3
    assert all(t["backend"] == "claude_sdk" for t in listed)
    for turn in listed:  # every turn bills its own calls (the CLI caches the prompt)
        usage = turn["usage"]
        assert usage["output_tokens"] > 0, turn
        assert usage["input_tokens"] + usage["cache_read_tokens"] + usage["cache_write_tokens"] > 0


def test_a_warm_follow_up_reuses_the_same_cli_process(
    replicas: tuple[Served, Served],
) -> None:
    a, _ = replicas
    sid = f"sdk-{uuid.uuid4().hex[:10]}"
    _chat(a, sid, "one")
    before = {p.pid for p in _cli_processes(a)}
    _chat(a, sid, "two")
    after = {p.pid for p in _cli_processes(a)}
    assert before
    assert after == before


def test_the_cli_does_not_inherit_the_servers_secrets(
    replicas: tuple[Served, Served], fake: FakeUpstreamHandle
) -> None:
    a, _ = replicas
    _chat(a, f"sdk-{uuid.uuid4().hex[:10]}", "hello")
    clis = _cli_processes(a)
    assert clis
    for cli in clis:
        env = cli.environ()
        # The server's database and Redis URLs (and any other secret of its environment)
        # would reach a model that can run commands in the CLI.
        assert env.get("DATABASE_URL") == ""
        assert env.get("REDIS_URL") == ""
        assert env.get("COPILOT_REDIS_KEY_PREFIX") == ""
        assert env["ANTHROPIC_BASE_URL"] == fake.base_url
        assert env["PATH"]


def test_deleting_a_session_leaves_no_cli_process_and_no_workspace(
    replicas: tuple[Served, Served], roots: tuple[Path, Path]
) -> None:
    a, b = replicas
    sid = f"sdk-{uuid.uuid4().hex[:10]}"
    before = [set(root.iterdir()) for root in roots]
    _chat(a, sid, "hello")
    _chat(b, sid, "hello again")
    made = [set(root.iterdir()) - known for root, known in zip(roots, before, strict=True)]
    assert all(len(new) == 1 for new in made), "each replica made a workspace for the session"
    clis = len(_cli_processes(a)) + len(_cli_processes(b))
    with a.client() as http:
        assert http.delete(f"/api/v1/sessions/{sid}").status_code == 204
    # Both replicas forget it: A at once, B through the forget message.
    wait_until(
        lambda: all(
            set(root.iterdir()) == known for root, known in zip(roots, before, strict=True)
        ),
        timeout=20,
    )
    wait_until(lambda: len(_cli_processes(a)) + len(_cli_processes(b)) <= clis - 2, timeout=20)


def test_shutdown_leaves_no_cli_process(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = Path(tempfile.mkdtemp(prefix="ws", dir="/tmp"))
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_BACKEND="claude_sdk",
        COPILOT_WORKSPACES_DIR=str(root),
    )
    try:
        with serve(env, tmp_path_factory.mktemp("c")) as c:
            _chat(c, f"sdk-{uuid.uuid4().hex[:10]}", "hello")
            clis = _cli_processes(c)
            assert clis
            c.proc.send_signal(signal.SIGTERM)
            c.proc.wait(30)
        assert not [p for p in clis if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_steer_during_a_tool_call_reaches_the_clis_next_model_call(
    fake: FakeUpstreamHandle, replicas: tuple[Served, Served]
) -> None:
    # The CLI's PostToolUse hook hands it over (`SteeringHook`): the next request carries
    # it right after the tool's result, within the same turn.
    a, b = replicas
    sid = f"steer-{uuid.uuid4().hex[:8]}"
    first: dict[str, Any] = {}
    slow_tool = (
        '[[fake:tool name=calculate input={"expression": "6*7"} '
        'text="let me work this out step by step before calling the tool" rate=8]]'
    )

    def run_first() -> None:
        with a.client() as http:
            first["r"] = stream(
                http, "POST", "/api/v1/chat", json={"id": sid, "message": slow_tool}
            )

    thread = threading.Thread(target=run_first)
    thread.start()
    with b.client() as http:
        wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json().get("status") == "running")
        steer = stream(
            http,
            "POST",
            "/api/v1/chat",
            json={"id": sid, "message": "also say banana", "on_conflict": "steer"},
        )
    thread.join(60)
    running = first["r"]
    assert_well_formed(running)
    statuses = [c["data"]["status"] for c in steer.chunks if c["type"] == "data-status"]
    assert statuses == ["steering", "steered"]
    assert [c["data"]["text"] for c in running.of("data-steer")] == ["also say banana"]
    # The model's next call: the tool's result, then the message, as the CLI frames it.
    calls = [r["json"]["messages"] for r in fake.requests("/v1/messages")]
    with_steer = [m for m in calls if "also say banana" in str(m[-1])]
    assert with_steer, "the steer reached a model call"
    # (This CLI puts it in the tool_result's content as a system reminder; others send a
    # system message right after it: either way it follows the result.)
    tail = str(with_steer[0][-2:])
    assert tail.index("tool_result") < tail.index("The user sent a new message while you were")
    with a.client() as http:
        history = http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    kinds = [p["type"] for p in history[1]["parts"]]
    assert kinds.count("data-steer") == 1
    assert kinds.index("tool-calculate") < kinds.index("data-steer")
    assert kinds[-1] == "text"
