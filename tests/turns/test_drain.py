"""The drain on SIGTERM, on a real `copilot serve`: not ready, new chats refused, running turns
finish for up to `COPILOT_DRAIN_S`, resume and stop still served, the rest interrupted.

Bounds are generous (a loaded 2-core machine): a "short" turn needs a few seconds of a drain
several times longer, a "long" one could not finish in ten drains.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import (
    Served,
    StreamResult,
    assert_well_formed,
    serve,
    stream,
    turns,
    upstream_env,
    wait_until,
)

SHORT = "[[fake:text tokens=60 rate=20]]"  # about 3 s
LONG = "[[fake:text tokens=4000 rate=20]]"  # about 200 s
BRIEF = "[[fake:text tokens=30 rate=20]]"  # about 1.5 s


def _stored(database_url: str, session_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """Per session: its turn's status, its assistant message's status and stored text."""

    async def run() -> dict[str, tuple[str, str, str]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT t.session_id, t.status, m.status, m.parts FROM turns t "
                        "JOIN chat_messages m ON m.session_id = t.session_id "
                        "AND m.role = 'assistant' WHERE t.session_id = ANY(:ids)"
                    ),
                    {"ids": session_ids},
                )
                return {
                    sid: (turn, message, _text_of(parts))
                    for sid, turn, message, parts in rows.all()
                }
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def _chat(http: httpx.Client, sid: str, message: str) -> StreamResult:
    return stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": message})


def _running(http: httpx.Client, sid: str) -> bool:
    listed = http.get(f"/api/v1/sessions/{sid}/turns")
    return listed.status_code == 200 and any(
        t["status"] == "running" for t in listed.json()["turns"]
    )


def _assert_refused_while_draining(http: httpx.Client) -> None:
    refused = http.post(
        "/api/v1/chat", json={"id": f"late-{uuid.uuid4().hex[:8]}", "message": "hi"}
    )
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) > 0
    error = refused.json()["error"]
    assert error["code"] == "draining"
    assert "another server" in error["message"]


def _assert_interrupted(result: StreamResult) -> None:
    assert_well_formed(result)
    assert result.error is not None
    assert result.error["code"] == "interrupted"
    assert result.error["retryable"] is True


def _sigterm(served: Served) -> float:
    served.proc.send_signal(signal.SIGTERM)
    return time.monotonic()


def _in_threads(pool: ThreadPoolExecutor, calls: dict[str, Callable[[], StreamResult]]) -> Any:
    return {sid: pool.submit(call) for sid, call in calls.items()}


def test_sigterm_drains_finishes_short_turns_serves_resume_and_stop_then_interrupts(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    drain_s, grace_s = 10, 5
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_DRAIN_S=str(drain_s),
        COPILOT_GRACEFUL_SHUTDOWN_S=str(grace_s),
    )
    tag = uuid.uuid4().hex[:8]
    short, long, stopped = f"drain-s-{tag}", f"drain-l-{tag}", f"drain-x-{tag}"
    # The pool is left last: the server stops (and the streams end) before it is waited on.
    with (
        ThreadPoolExecutor(4) as pool,
        serve(env, tmp_path) as served,
        served.client() as http,
    ):
        streams: dict[str, Future[StreamResult]] = _in_threads(
            pool,
            {
                short: lambda: _chat(http, short, SHORT),
                long: lambda: _chat(http, long, LONG),
                stopped: lambda: _chat(http, stopped, LONG),
            },
        )
        wait_until(lambda: all(_running(http, sid) for sid in streams), timeout=30)
        signalled = _sigterm(served)

        wait_until(lambda: http.get("/readyz").status_code == 503, timeout=5)
        ready = http.get("/readyz")
        assert ready.json()["error"]["code"] == "draining"
        _assert_refused_while_draining(http)

        # Resume works during the drain: a second consumer of the long turn, read to its end.
        resumed = pool.submit(stream, http, "GET", f"/api/v1/chat/{long}/stream")
        # So does stop, and it is answered once the turn is stored.
        assert http.post(f"/api/v1/chat/{stopped}/stop").status_code == 202
        wait_until(lambda: turns(http, stopped)[0]["status"] == "stopped", timeout=10)
        assert streams[stopped].result(30).done

        finished = streams[short].result(drain_s + 30)
        assert time.monotonic() - signalled < drain_s, "the short turn ended within the drain"
        assert_well_formed(finished)
        assert finished.error is None
        assert finished.chunks[-1]["finishReason"] == "stop"
        assert served.proc.poll() is None, "the long turn keeps the server draining"

        assert served.proc.wait(drain_s + grace_s + 30) == 0
        elapsed = time.monotonic() - signalled
        assert drain_s - 0.5 <= elapsed < drain_s + grace_s + 15, elapsed
        _assert_interrupted(streams[long].result(10))
        resumed_result = resumed.result(10)
        _assert_interrupted(resumed_result)
        assert resumed_result.text == streams[long].result().text

    stored = _stored(database_url, [short, long, stopped])
    assert stored[short][:2] == ("completed", "complete")
    assert stored[short][2] == finished.text
    assert stored[long][:2] == ("interrupted", "interrupted")
    assert stored[long][2] == streams[long].result().text
    assert stored[stopped][0] == "stopped"


def test_sigterm_with_50_live_streams_and_a_5_s_drain_loses_nothing(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    drain_s, grace_s = 5, 10
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_DRAIN_S=str(drain_s),
        COPILOT_GRACEFUL_SHUTDOWN_S=str(grace_s),
    )
    tag = uuid.uuid4().hex[:8]
    shorts = [f"d50-s{i}-{tag}" for i in range(25)]
    longs = [f"d50-l{i}-{tag}" for i in range(25)]
    limits = httpx.Limits(max_connections=80, max_keepalive_connections=80)
    with (
        ThreadPoolExecutor(50) as pool,
        serve(env, tmp_path) as served,
        served.client(limits=limits) as http,
    ):
        calls: dict[str, Callable[[], StreamResult]] = {}
        for sid in shorts:
            calls[sid] = lambda sid=sid: _chat(http, sid, BRIEF)
        for sid in longs:
            calls[sid] = lambda sid=sid: _chat(http, sid, LONG)
        streams: dict[str, Future[StreamResult]] = _in_threads(pool, calls)

        def started(sid: str) -> bool:
            listed = http.get(f"/api/v1/sessions/{sid}/turns")
            return listed.status_code == 200 and bool(listed.json()["turns"])

        wait_until(lambda: all(started(sid) for sid in streams), timeout=60, interval=0.5)
        assert all(_running(http, sid) for sid in longs)
        signalled = _sigterm(served)
        wait_until(lambda: http.get("/readyz").status_code == 503, timeout=5)
        _assert_refused_while_draining(http)

        assert served.proc.wait(drain_s + grace_s + 30) == 0
        assert time.monotonic() - signalled < drain_s + grace_s + 15
        results = {sid: future.result(10) for sid, future in streams.items()}

    stored = _stored(database_url, [*shorts, *longs])
    for sid in shorts:
        assert_well_formed(results[sid])
        assert results[sid].error is None, (sid, results[sid].error)
        assert stored[sid][:2] == ("completed", "complete"), sid
    for sid in longs:
        _assert_interrupted(results[sid])
        assert stored[sid][:2] == ("interrupted", "interrupted"), sid
    for sid, result in results.items():
        assert stored[sid][2] == result.text, f"{sid}: what the client saw is what is stored"
        assert result.text, sid
