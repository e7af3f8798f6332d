"""What survives when things go wrong on purpose: a killed server, a stuck client, a slow reply."""

from __future__ import annotations

import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import orjson

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import (
    assert_well_formed,
    finished_turn,
    serve,
    sql_rows,
    start_turn_raw,
    stream,
    turns,
    upstream_env,
    wait_until,
)


def _assistant_rows(database_url: str, session_id: str) -> list[Any]:
    return sql_rows(
        database_url,
        "SELECT status, parts FROM chat_messages WHERE session_id = :s AND role = 'assistant' "
        "ORDER BY seq",
        s=session_id,
    )


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def test_the_partial_reply_reaches_postgres_while_streaming(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = upstream_env(fake.base_url, database_url, redis_url, COPILOT_FLUSH_INTERVAL_S="0.3")
    sid = f"flush-{uuid.uuid4().hex[:8]}"
    with serve(env, tmp_path) as served:
        sock = start_turn_raw(served, sid, "[[fake:text tokens=200 rate=40]]")
        try:
            rows = wait_until(
                lambda: [
                    r
                    for r in _assistant_rows(database_url, sid)
                    if r.status == "streaming" and _text_of(r.parts)
                ],
                timeout=10,
            )
            assert 0 < len(_text_of(rows[0].parts).split()) < 200
        finally:
            sock.close()


def test_a_killed_server_keeps_the_partial_reply_and_frees_the_session(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_FLUSH_INTERVAL_S="0.2",
        COPILOT_LEASE_TTL_S="1",
    )
    sid = f"kill-{uuid.uuid4().hex[:8]}"
    with serve(env, tmp_path) as served:
        sock = start_turn_raw(served, sid, "[[fake:text tokens=400 rate=50]]")
        wait_until(lambda: any(_text_of(r.parts) for r in _assistant_rows(database_url, sid)), 10)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(10)
        sock.close()
    partial = _text_of(_assistant_rows(database_url, sid)[0].parts)
    assert partial, "what was flushed before the kill is kept"

    with serve(env, tmp_path) as again, again.client() as http:

        def next_turn() -> Any:
            result = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "again"})
            return result if result.status == 200 else None

        result = wait_until(next_turn, timeout=15, interval=0.2)
        assert_well_formed(result)
        statuses = [t["status"] for t in turns(http, sid)]
        assert statuses == ["interrupted", "completed"]
        history = http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
        # What was flushed is kept, and more: the reply is rebuilt from the turn's EventLog,
        # which is a flush window behind the client rather than a partial-write interval.
        assert _text_of(history[1]["parts"]).startswith(partial)
        assert history[1]["parts"][-1]["data"]["code"] == "interrupted"


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    # 600,000 tokens make ~7 MB of frames: more than the kernel's socket buffers take (4 MB at
    # most here), so the sends block however fast the turn itself is.
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_SEND_TIMEOUT_S="1",
        COPILOT_ANTHROPIC_MAX_TOKENS="1000000",
    )
    sid = f"stuck-{uuid.uuid4().hex[:8]}"
    with serve(env, tmp_path) as served, served.client() as http:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = served.base_url.removeprefix("http://").split(":")
        sock.connect((host, int(port)))
        body = orjson.dumps({"id": sid, "message": "[[fake:text tokens=600000 rate=0]]"})
        sock.sendall(
            b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )

        def streams_active() -> float:
            metrics = http.get("/metrics").text
            line = next(
                ln for ln in metrics.splitlines() if ln.startswith("copilot_streams_active ")
            )
            return float(line.split()[1])

        wait_until(lambda: streams_active() == 1, timeout=10)
        wait_until(lambda: streams_active() == 0, timeout=20)
        assert "dropped a client that stopped reading" in served.log()
        turn = finished_turn(http, sid, timeout=30)
        assert turn["status"] == "completed", "the turn outlives its stuck consumer"
        sock.close()


def test_sigterm_mid_turn_ends_the_stream_cleanly_and_records_the_interruption(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    # No drain: the stop interrupts the turn at once (the drain has its own tests).
    env = upstream_env(fake.base_url, database_url, redis_url, COPILOT_DRAIN_S="0")
    sid = f"term-{uuid.uuid4().hex[:8]}"
    with serve(env, tmp_path) as served, served.client() as http:
        with http.stream(
            "POST",
            "/api/v1/chat",
            json={
                "id": sid,
                "message": "[[fake:text tokens=400 rate=40]]",
            },
        ) as response:
            lines = response.iter_lines()
            for line in lines:
                if '"text-delta"' in line:
                    break
            served.proc.send_signal(signal.SIGTERM)
            rest = "\n".join(lines)
        assert served.proc.wait(30) == 0
    assert '"code":"interrupted"' in rest
    assert '"retryable":true' in rest
    assert rest.rstrip().endswith("data: [DONE]")
    status, input_tokens = sql_rows(
        database_url,
        "SELECT status, input_tokens + cache_write_tokens FROM turns WHERE session_id = :s",
        s=sid,
    )[0]
    assert status == "interrupted"
    assert input_tokens > 0, "input billed even though the reply was cut"
    rows = _assistant_rows(database_url, sid)
    assert rows[0].status == "interrupted"
    assert _text_of(rows[0].parts)
