"""Starting turns in-process: admission under a burst, and a stop that comes before the task ran."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import FastAPI
from sqlalchemy import text

from app.lifespan import AppState
from app.turns.services import TurnContext
from app.turns.start import TurnOrder, begin_turn


def _order(session_id: str, text_: str = "[[fake:text tokens=3 rate=0]]") -> TurnOrder:
    return TurnOrder(
        session_id=session_id,
        user_id="alice",
        trigger="submit-message",
        user_message_id=None,
        user_parts=[{"type": "text", "text": text_}],
        user_metadata={},
        regenerate_message_id=None,
        on_conflict="reject",
    )


def _state(app: FastAPI) -> tuple[AppState, TurnContext]:
    state: AppState = app.state.copilot
    assert state.turns is not None
    return state, state.turns


async def test_a_turn_stopped_before_its_task_ran_still_ends_stored_and_frees_its_session(
    app: FastAPI,
) -> None:
    state, ctx = _state(app)
    session_id = f"s-{uuid.uuid4().hex}"
    runner = await begin_turn(ctx, _order(session_id))
    assert runner.stop("stopped")  # before the event loop ran the turn's task at all

    async def read() -> list[bytes]:
        return [frame async for frame in runner.frames_from(0)]

    frames = await asyncio.wait_for(read(), 10)
    await asyncio.wait_for(runner.wait_persisted(), 10)

    wire = b"".join(frames)
    assert b'"type":"finish"' in wire
    assert wire.endswith(b"data: [DONE]\n\n")
    async with state.sessions() as db:
        turn = {"id": runner.turn_id}
        status = (
            await db.execute(text("SELECT status FROM turns WHERE id = :id"), turn)
        ).scalar_one()
        active = (
            await db.execute(
                text("SELECT active_turn_id FROM chat_sessions WHERE id = :id"), {"id": session_id}
            )
        ).scalar_one()
    assert status == "stopped"
    assert active is None
    second = await begin_turn(ctx, _order(session_id))  # the session is free
    await asyncio.wait_for(second.wait_persisted(), 10)


async def test_a_burst_of_starts_fills_every_start_place_and_gives_each_back(
    app: FastAPI,
) -> None:
    _, ctx = _state(app)
    gate = ctx.starts
    most = 0
    watching = True

    async def watch() -> None:
        nonlocal most
        while watching:
            assert gate.in_flight <= gate.limit <= gate.ceiling
            most = max(most, gate.in_flight)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    runners = await asyncio.gather(
        *(begin_turn(ctx, _order(f"s-{uuid.uuid4().hex}")) for _ in range(gate.limit * 3))
    )
    watching = False
    await watcher
    await asyncio.wait_for(asyncio.gather(*(r.wait_persisted() for r in runners)), 30)
    assert most >= gate.floor  # the burst filled the gate
    assert gate.in_flight == 0  # and every place was given back
    assert gate.waiting == 0
    assert all(r.outcome.status == "completed" for r in runners)
