"""Liveness, readiness (database and Redis) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from sqlalchemy import text

from app.api.deps import StateDep, metrics_reader
from app.api.errors import error_response
from app.observability.metrics import render

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(state: StateDep) -> dict[str, str] | Response:
    """The database and Redis answer; 503 names what is down, or says the replica drains."""
    if state.drain.active:
        return error_response(
            503, "draining", "shutting down: finishing running turns, taking no new chats"
        )

    async def database() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await state.redis.ping()

    down: list[str] = []
    for name, check in (("database", database), ("redis", redis)):
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT_S)
        except Exception:
            down.append(name)
    if down:
        return error_response(
            503, "not_ready", f"not ready: {', '.join(down)} unreachable", {"down": down}
        )
    return {"status": "ready"}


@router.get("/metrics", response_class=Response, dependencies=[Depends(metrics_reader)])
async def metrics() -> Response:
    """Prometheus exposition format (needs COPILOT_METRICS_TOKEN as a bearer token when set)."""
    body, content_type = render()
    return Response(body, media_type=content_type)
