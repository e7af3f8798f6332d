"""The reaper: a live replica records the turns of a dead one, once, and closes their streams."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from app.coord.lock import Lease
from app.coord.redis import Keys
from app.coord.replicas import ReplicaDirectory
from app.devtools.fake_upstream import FakeUpstreamHandle
from app.store.db import connect_args
from app.store.turn_rows import StartOrder, TurnEnd, TurnRows
from app.store.usage import Usage
from app.stream import chunks
from app.stream.eventlog import EventLogWriter, log_frames
from app.stream.replay import frame_chunks
from app.stream.sse import frame
from app.turns.reaper import Reaper
from app.turns.registry import TurnRegistry
from tests.serving import (
    Served,
    StreamResult,
    assert_well_formed,
    parse_sse,
    serve,
    start_turn_raw,
    stream,
    turns,
    upstream_env,
    wait_until,
)

PREFIX = f"reap-{uuid.uuid4().hex[:8]}"
LEASE_TTL_S = 1.0
REAP_INTERVAL_S = 0.5


def _env(fake: FakeUpstreamHandle, database_url: str, redis_url: str, name: str) -> dict[str, str]:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_REDIS_KEY_PREFIX=PREFIX,
        COPILOT_REPLICA_ID=name,
        COPILOT_HEARTBEAT_S="0.5",
        COPILOT_FLUSH_INTERVAL_S="0.2",
        COPILOT_LEASE_TTL_S=str(LEASE_TTL_S),
        COPILOT_REAP_INTERVAL_S=str(REAP_INTERVAL_S),
    )


@pytest.fixture(scope="module")
def survivor(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    with serve(_env(fake, database_url, redis_url, "survivor"), tmp_path_factory.mktemp("b")) as b:
        yield b


def _tail_until_end(response: httpx.Response, kill: Any) -> tuple[StreamResult, float]:
    """Read a resumed stream; call `kill` once text flows; the stream and how long it took
    to end after the kill."""
    body = b""
    pieces = response.iter_raw()
    while b'"text-delta"' not in body:
        body += next(pieces)
    kill()
    killed_at = time.monotonic()
    for piece in pieces:
        body += piece
    ended_in = time.monotonic() - killed_at
    chunks_, ids, comments, done = parse_sse(body)
    return StreamResult(
        response.status_code, response.headers, chunks_, ids, comments, done, body
    ), (ended_in)


def test_a_killed_replicas_turn_is_reaped_and_the_client_tailing_it_elsewhere_ends(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path, survivor: Served
) -> None:
    sid = f"orphan-{uuid.uuid4().hex[:8]}"
    with serve(_env(fake, database_url, redis_url, "doomed"), tmp_path) as doomed:
        sock = start_turn_raw(doomed, sid, "[[fake:text tokens=500 rate=50]]")
        with (
            survivor.client() as http,
            http.stream("GET", f"/api/v1/chat/{sid}/stream") as response,
        ):

            def kill() -> None:
                doomed.proc.send_signal(signal.SIGKILL)
                doomed.proc.wait(10)

            tailed, ended_in = _tail_until_end(response, kill)
        sock.close()
    assert_well_formed(tailed)
    assert tailed.error == {
        "code": "interrupted",
        "message": tailed.error["message"],
        "retryable": True,
    }
    # The bound: the lease's TTL, one reaper period (with its jitter), and the reader's block.
    assert ended_in < LEASE_TTL_S + REAP_INTERVAL_S * 1.2 + 2 + 2  # + margin for a busy box
    with survivor.client() as http:
        [turn] = turns(http, sid)
        assert turn["status"] == "interrupted"
        assert turn["reaped_by"] == "survivor"
        assert turn["error_code"] == "interrupted"
        assert turn["finished_at"] is not None
        session = http.get(f"/api/v1/sessions/{sid}").json()
        assert session["status"] == "idle"
        assert session["active_turn_id"] is None
        [user, reply] = http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
        text = "".join(p.get("text", "") for p in reply["parts"] if p["type"] == "text")
        # What the client saw is what is stored: the reply rebuilt from the EventLog.
        assert text == tailed.text
        assert text
        assert reply["parts"][-1]["type"] == "data-error"
        assert reply["parts"][-1]["data"]["code"] == "interrupted"
        assert reply["metadata"]["finishReason"] == "error"
        # The session is free: the next message is answered at once.
        nxt = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "again"})
        assert_well_formed(nxt)
        assert nxt.chunks[-1]["finishReason"] == "stop"


def test_an_orphan_is_reaped_without_anyone_asking(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path, survivor: Served
) -> None:
    sid = f"quiet-{uuid.uuid4().hex[:8]}"
    with serve(_env(fake, database_url, redis_url, "doomed"), tmp_path) as doomed:
        sock = start_turn_raw(doomed, sid, "[[fake:text tokens=500 rate=50]]")
        with survivor.client() as http:
            wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["status"] == "running")
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        killed_at = time.monotonic()
        sock.close()
    with survivor.client() as http:
        reaped = wait_until(
            lambda: [t for t in turns(http, sid) if t["status"] == "interrupted"], timeout=15
        )
        took = time.monotonic() - killed_at
        assert reaped[0]["reaped_by"] == "survivor"
        assert took < LEASE_TTL_S + REAP_INTERVAL_S * 1.2 + 2  # + margin for a busy box
        # A resume now replays the stored turn, closed with the error.
        resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
        if resumed.status == 200:
            assert_well_formed(resumed)
            assert resumed.error is not None
            assert resumed.error["code"] == "interrupted"
        else:
            assert resumed.status == 204


def test_a_paused_replica_finds_its_turn_reaped_and_does_not_overwrite_it(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path, survivor: Served
) -> None:
    # A replica frozen longer than the lease (a GC pause, a stalled VM) is taken for dead. When
    # it wakes it stops the turn; what the reaper stored stays as it is.
    sid = f"paused-{uuid.uuid4().hex[:8]}"
    with serve(_env(fake, database_url, redis_url, "sleepy"), tmp_path) as sleepy:
        with (
            sleepy.client() as http,
            http.stream(
                "POST",
                "/api/v1/chat",
                json={"id": sid, "message": "[[fake:text tokens=300 rate=50]]"},
            ) as response,
        ):

            def freeze() -> None:
                sleepy.proc.send_signal(signal.SIGSTOP)

            body = b""
            pieces = response.iter_raw()
            while b'"text-delta"' not in body:
                body += next(pieces)
            freeze()
            try:
                with survivor.client() as other:
                    wait_until(
                        lambda: [t for t in turns(other, sid) if t["status"] == "interrupted"],
                        timeout=15,
                    )
                    stored = other.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
            finally:
                sleepy.proc.send_signal(signal.SIGCONT)
            for piece in pieces:
                body += piece
        own = parse_sse(body)[0]
        # Its own client is told the turn was interrupted, and the stream ends.
        assert own[-1]["type"] == "finish"
        assert any(c["type"] == "data-error" for c in own)
        with survivor.client() as other:
            [turn] = turns(other, sid)
            assert turn["reaped_by"] == "survivor"
            assert turn["status"] == "interrupted"
            assert other.get(f"/api/v1/sessions/{sid}/messages").json()["messages"] == stored


def test_the_replicas_view_lists_live_replicas_and_drops_a_dead_one(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path, survivor: Served
) -> None:
    env = {
        **_env(fake, database_url, redis_url, "listed"),
        "COPILOT_METRICS_TOKEN": "ops-secret-0123456789",
    }
    with serve(env, tmp_path) as listed:
        with listed.client() as http:
            assert http.get("/api/v1/replicas").status_code == 401
            ops = {"Authorization": "Bearer ops-secret-0123456789"}
            sock = start_turn_raw(
                listed, f"view-{uuid.uuid4().hex[:8]}", "[[fake:text tokens=200 rate=50]]"
            )
            try:

                def both() -> Any:
                    page = http.get("/api/v1/replicas", headers=ops).json()
                    by_id = {r["id"]: r for r in page["replicas"]}
                    if {"listed", "survivor"} <= set(by_id) and by_id["listed"]["running_turns"]:
                        return page
                    return None

                page = wait_until(both, timeout=10)
            finally:
                sock.close()
        assert page["this_replica"] == "listed"
        listed_report = next(r for r in page["replicas"] if r["id"] == "listed")
        assert listed_report["running_turns"] == 1
        assert listed_report["draining"] is False
        assert listed_report["pid"] == listed.proc.pid
        assert listed_report["age_s"] < 3
        listed.proc.send_signal(signal.SIGKILL)
        listed.proc.wait(10)
    with survivor.client() as http:
        wait_until(
            lambda: (
                "listed" not in {r["id"] for r in http.get("/api/v1/replicas").json()["replicas"]}
            ),
            timeout=10,
        )
        assert "survivor" in {r["id"] for r in http.get("/api/v1/replicas").json()["replicas"]}


# -- in one process, against the real Postgres and Redis ---------------------------------------


@pytest_asyncio.fixture
async def parts_of_a_reaper(
    database_url: str, redis_url: str
) -> AsyncIterator[tuple[TurnRows, Redis, Keys]]:
    rows = await TurnRows.open(database_url, 4, connect_args(database_url))
    client = Redis.from_url(redis_url)
    try:
        yield rows, client, Keys(f"reapx-{uuid.uuid4().hex[:8]}")
    finally:
        await client.aclose()
        await rows.close()


async def _orphan(rows: TurnRows, redis_: Redis, keys: Keys) -> tuple[str, uuid.UUID, str]:
    """A turn recorded as running whose replica (known to the fleet) is gone: rows, and a log
    holding the start of its reply, but no lease."""
    await ReplicaDirectory(redis_, keys.prefix).announce("gone", {}, age_s=60)
    sid, turn_id = f"race-{uuid.uuid4().hex[:8]}", uuid.uuid4()
    started = await rows.start(
        StartOrder(
            session_id=sid,
            user_id="local",
            turn_id=turn_id,
            user_message_id=f"u-{turn_id.hex}",
            user_parts=[{"type": "text", "text": "hi"}],
            user_metadata={},
            assistant_message_id=f"a-{turn_id.hex}",
            backend="anthropic",
            model="claude-test",
            replica_id="gone",
        )
    )

    assert started is not None
    lease = Lease(redis_, keys.session_lease(sid), 60_000)
    key = keys.turn_events(sid, str(turn_id))
    assert await lease.acquire(key, 60)
    sent = [
        chunks.start(f"a-{turn_id.hex}"),
        {"type": "start-step"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "half a rep"},
    ]
    await redis_.xadd(key, {b"d": b"".join(frame(i, c) for i, c in enumerate(sent))})
    assert await lease.release()  # the replica died: its lease expired
    return sid, turn_id, key


def _reaper(rows: TurnRows, redis_: Redis, keys: Keys, name: str) -> tuple[Reaper, EventLogWriter]:
    log = EventLogWriter(redis_, 0.001, 60)
    return Reaper(rows, redis_, keys, TurnRegistry(), log, name, 1.0), log


async def test_of_two_reapers_racing_for_one_orphan_exactly_one_records_it(
    parts_of_a_reaper: tuple[TurnRows, Redis, Keys], database_url: str
) -> None:
    rows, redis_, keys = parts_of_a_reaper
    # Two pools: two connections really racing in Postgres, as two replicas would.
    other_rows = await TurnRows.open(database_url, 2, connect_args(database_url))
    try:
        sid, turn_id, key = await _orphan(rows, redis_, keys)
        (one, one_log), (two, two_log) = (
            _reaper(rows, redis_, keys, "one"),
            _reaper(other_rows, redis_, keys, "two"),
        )
        won = await asyncio.gather(one.reap(sid, turn_id), two.reap(sid, turn_id))
        await one_log.flush()
        await two_log.flush()
        assert sorted(won) == [False, True]
        sent = [c for _, c in frame_chunks(await log_frames(redis_, key))]
        assert [c["type"] for c in sent].count("finish") == 1
        assert [c["type"] for c in sent][4:] == [
            "text-end",
            "finish-step",
            "data-error",
            "error",
            "finish",
        ]
        parts = await rows.pool.fetchval(
            "SELECT parts FROM chat_messages WHERE session_id = $1 AND role = 'assistant'", sid
        )
        assert [p["type"] for p in parts] == ["step-start", "text", "data-error"]
        assert parts[1]["text"] == "half a rep"
        turn = await rows.pool.fetchrow(
            "SELECT status, reaped_by FROM turns WHERE id = $1", turn_id
        )
        assert turn["status"] == "interrupted"
        assert turn["reaped_by"] == ("one" if won[0] else "two")
        # A sweep afterwards finds nothing more to do.
        assert await one.sweep() == 0
    finally:
        await other_rows.close()


async def test_a_sweep_reaps_only_turns_without_a_lease(
    parts_of_a_reaper: tuple[TurnRows, Redis, Keys],
) -> None:
    rows, redis_, keys = parts_of_a_reaper
    sid, turn_id, _ = await _orphan(rows, redis_, keys)
    live_sid, live_turn, _ = await _orphan(rows, redis_, keys)
    held = Lease(redis_, keys.session_lease(live_sid), 60_000)
    assert await held.acquire()  # its replica is alive and renewing
    reaper, log = _reaper(rows, redis_, keys, "sweeper")
    try:
        assert await reaper.sweep() >= 1
        statuses = dict(
            await rows.pool.fetch(
                "SELECT id, status FROM turns WHERE id = ANY($1::uuid[])", [turn_id, live_turn]
            )
        )
        assert statuses == {turn_id: "interrupted", live_turn: "running"}
    finally:
        await held.release()
        await log.flush()


async def test_turns_of_replicas_outside_the_fleet_are_left_alone(
    parts_of_a_reaper: tuple[TurnRows, Redis, Keys],
) -> None:
    # Another deployment on the same database, under another key prefix: its leases are
    # invisible here, so its turns must not be taken for orphans.
    rows, redis_, keys = parts_of_a_reaper
    sid, turn_id, _ = await _orphan(rows, redis_, Keys(f"other-{uuid.uuid4().hex[:8]}"))
    reaper, _ = _reaper(rows, redis_, keys, "sweeper")
    await reaper.sweep()
    status = await rows.pool.fetchval("SELECT status FROM turns WHERE id = $1", turn_id)
    assert status == "running"
    assert await reaper.reap(sid, turn_id)  # a message on its session would reap it


async def test_the_late_final_write_of_a_reaped_turn_keeps_the_reapers_record_and_adds_usage(
    parts_of_a_reaper: tuple[TurnRows, Redis, Keys],
) -> None:
    rows, redis_, keys = parts_of_a_reaper
    sid, turn_id, _ = await _orphan(rows, redis_, keys)
    reaper, _ = _reaper(rows, redis_, keys, "reaper")
    assert await reaper.reap(sid, turn_id)
    stored = await rows.pool.fetchrow(
        "SELECT parts, status FROM chat_messages WHERE session_id = $1 AND role = 'assistant'", sid
    )
    now = datetime.now(UTC)
    late = TurnEnd(
        session_id=sid,
        turn_id=turn_id,
        message_id=f"a-{turn_id.hex}",
        parts=[{"type": "text", "text": "the slow replica's own version", "state": "done"}],
        message_status="complete",
        metadata={},
        status="completed",
        finish_reason="stop",
        error_code=None,
        error_message=None,
        attempt_log=[],
        first_token_at=now,
        finished_at=now,
        ttft_ms=1,
        duration_ms=2,
        usage=Usage(input_tokens=120, output_tokens=30),
        cost=Decimal("0.0009"),
        trace_id=None,
    )
    for _ in range(2):  # a retried final write counts the usage once
        await rows.finish(late)
    assert stored == await rows.pool.fetchrow(
        "SELECT parts, status FROM chat_messages WHERE session_id = $1 AND role = 'assistant'", sid
    )
    turn = await rows.pool.fetchrow(
        "SELECT status, reaped_by, input_tokens, output_tokens, cost_usd FROM turns WHERE id = $1",
        turn_id,
    )
    assert dict(turn) == {
        "status": "interrupted",
        "reaped_by": "reaper",
        "input_tokens": 120,
        "output_tokens": 30,
        "cost_usd": Decimal("0.0009"),
    }
    session = await rows.pool.fetchrow(
        "SELECT input_tokens, cost_usd, active_turn_id FROM chat_sessions WHERE id = $1", sid
    )
    assert dict(session) == {
        "input_tokens": 120,
        "cost_usd": Decimal("0.0009"),
        "active_turn_id": None,
    }
