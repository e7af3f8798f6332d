"""A turn's runner, in-process: what it leaves behind once its turn is over."""

from __future__ import annotations

import asyncio
import gc
import weakref

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.turns.runner import TurnRunner
from tests.conftest import bearer


async def test_a_finished_turn_is_freed_without_the_collector(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    """Its runner, frames and reply go when the last reference does: a cycle through the
    runner's own methods kept every finished turn for the collector's full passes, which
    stopped the event loop for 12-30 ms under load."""
    registry = app.state.copilot.turns.registry
    seen: list[weakref.ref[TurnRunner]] = []
    add = registry.add

    def track(runner: TurnRunner) -> None:
        seen.append(weakref.ref(runner))
        add(runner)

    registry.add = track
    gc.disable()
    try:
        body = {"id": "freed", "message": "[[fake:text tokens=20]]"}
        async with client.stream(
            "POST", "/api/v1/chat", json=body, headers=bearer(settings, "alice")
        ) as response:
            assert response.status_code == 200
            assert b"[DONE]" in b"".join([chunk async for chunk in response.aiter_bytes()])
        runner = seen[0]()
        assert runner is not None
        await runner.wait_persisted()
        del runner
        for _ in range(50):
            if seen[0]() is None:
                break
            await asyncio.sleep(0.02)
        assert seen[0]() is None, [type(r).__qualname__ for r in gc.get_referrers(seen[0]())]
    finally:
        gc.enable()
