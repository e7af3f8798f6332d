"""A resume from the EventLog that has to end early: nothing the log holds is skipped, and a log
with a hole (a failover lost appends) ends the stream where the client is, well-formed."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.lifespan import AppState
from app.turns.follow import _close_from_postgres, follow_log
from tests.conftest import bearer
from tests.serving import parse_sse


async def _a_finished_turn(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> tuple[AppState, str, uuid.UUID, list[bytes]]:
    """A completed turn: its state, session, id, and the frames its client was sent."""
    sid = f"follow-{uuid.uuid4().hex[:8]}"
    headers = bearer(settings, "alice")
    message = "[[fake:text tokens=6 rate=2000]]"
    answer = await client.post(
        "/api/v1/chat", json={"id": sid, "message": message}, headers=headers
    )
    assert answer.status_code == 200
    frames = [e + b"\n\n" for e in answer.content.split(b"\n\n") if e.startswith(b"id: ")]
    turns = (await client.get(f"/api/v1/sessions/{sid}/turns", headers=headers)).json()
    return app.state.copilot, sid, uuid.UUID(turns["turns"][0]["id"]), frames


async def _log(state: AppState, key: str, frames: list[bytes]) -> None:
    """Replace the turn's log with one holding `frames`, without its end."""
    await state.redis.delete(key)
    await state.redis.xadd(key, {b"d": b""})
    await state.redis.xadd(key, {b"d": b"".join(frames)})
    await state.redis.expire(key, 60)


def _contiguous(sent: list[bytes], rest: bytes) -> list[dict[str, Any]]:
    chunks, ids, _comments, done = parse_sse(b"".join(sent) + rest)
    assert done
    assert ids == list(range(len(ids)))
    kinds = [c["type"] for c in chunks]
    assert kinds.count("finish") == 1
    assert kinds[-1] == "finish"
    return chunks


async def test_a_reader_that_gives_up_still_sends_what_was_logged_after_its_last_read(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    # The frames logged between the reader's last read and its closing were numbered past
    # and never sent: after a failover the owner flushes what it queued just then.
    state, sid, turn_id, frames = await _a_finished_turn(app, client, settings)
    key = state.keys.turn_events(sid, str(turn_id))
    await _log(state, key, frames)
    rest = await _close_from_postgres(state, turn_id, key, last_seq=2)
    chunks = _contiguous(frames[:3], rest)
    assert rest.startswith(b"".join(frames[3:]))
    assert chunks[-1]["finishReason"] == "stop"
    assert not [c for c in chunks if c["type"] == "data-error"]


async def test_a_log_with_a_hole_ends_the_resume_where_the_client_is_with_a_retryable_error(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    state, sid, turn_id, frames = await _a_finished_turn(app, client, settings)
    key = state.keys.turn_events(sid, str(turn_id))
    text_delta = next(i for i, f in enumerate(frames) if b'"text-delta"' in f)
    await _log(state, key, frames[: text_delta + 1] + frames[text_delta + 2 :])
    resumed = [data async for data in follow_log(state, sid, turn_id, -1, 5.0)]
    chunks = _contiguous([], b"".join(resumed))
    kinds = [c["type"] for c in chunks]
    assert (
        kinds[: text_delta + 1]
        == [c["type"] for c in parse_sse(b"".join(frames))[0]][: text_delta + 1]
    )
    assert kinds[text_delta + 1 :] == [
        "text-end",
        "finish-step",
        "data-error",
        "error",
        "finish",
    ]
    error = next(c for c in chunks if c["type"] == "data-error")["data"]
    assert (error["code"], error["retryable"]) == ("interrupted", True)
