"""Postgres or Redis dies in the middle of a turn, or before one: what the user sees, what is kept.

Each test runs its own embedded PostgreSQL and Redis, so they can be stopped and started again.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.coord.embedded_redis import EmbeddedRedis
from app.devtools.embedded_postgres import EmbeddedPostgres
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import (
    Served,
    StreamResult,
    assert_well_formed,
    finished_turn,
    serve,
    stream,
    turns,
    upstream_env,
    wait_until,
)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis]]:
    """A PostgreSQL and a Redis of this test only."""
    with EmbeddedPostgres(tmp_path / "svc") as pg, EmbeddedRedis(tmp_path / "svc") as redis:
        yield pg, redis


@pytest.fixture
def served(
    services: tuple[EmbeddedPostgres, EmbeddedRedis], fake: FakeUpstreamHandle, tmp_path: Path
) -> Iterator[Served]:
    pg, redis = services
    env = upstream_env(
        fake.base_url,
        pg.url,
        redis.url,
        COPILOT_FLUSH_INTERVAL_S="0.2",
        # Long enough that waiting for a lease to expire would show: a session must be free
        # as soon as its turn has ended and Redis is there to record it.
        COPILOT_LEASE_TTL_S="60",
        COPILOT_EVENTLOG_FLUSH_MS="10",
    )
    with serve(env, tmp_path) as server:
        yield server


def _chat_in_background(served: Served, sid: str, text: str) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        with served.client() as http:
            box.append(stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": text}))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def _running(http: httpx.Client, sid: str) -> bool:
    response = http.get(f"/api/v1/sessions/{sid}")
    return response.status_code == 200 and response.json()["status"] == "running"


def test_postgres_down_mid_turn_the_reply_is_stored_when_it_returns(
    served: Served, services: tuple[EmbeddedPostgres, EmbeddedRedis]
) -> None:
    pg, _ = services
    sid = f"pg-{uuid.uuid4().hex[:8]}"
    thread, box = _chat_in_background(served, sid, "[[fake:text tokens=60 rate=60]]")
    with served.client() as http:
        wait_until(lambda: _running(http, sid))
        pg.stop()
        thread.join(30)
        result: StreamResult = box[0]
        assert_well_formed(result)
        assert len(result.text.split()) == 60
        assert http.post("/api/v1/sessions", json={}).status_code == 503
        pg.start()
        stored = wait_until(
            lambda: [
                m
                for m in http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
                if m["role"] == "assistant" and m["parts"]
            ],
            timeout=60,
            interval=0.5,
        )
        texts = [p["text"] for p in stored[0]["parts"] if p["type"] == "text"]
        assert texts == [result.text]
        turn = turns(http, sid)[0]
        assert turn["status"] == "completed"


def test_redis_down_mid_turn_the_stream_and_the_reply_survive(
    served: Served, services: tuple[EmbeddedPostgres, EmbeddedRedis]
) -> None:
    _, redis = services
    sid = f"rd-{uuid.uuid4().hex[:8]}"
    thread, box = _chat_in_background(served, sid, "[[fake:text tokens=60 rate=60]]")
    with served.client() as http:
        wait_until(lambda: _running(http, sid))
        redis.stop()
        thread.join(30)
        result: StreamResult = box[0]
        assert_well_formed(result)
        assert len(result.text.split()) == 60
        turn = finished_turn(http, sid)
        assert turn["status"] == "completed"
        refused = http.post("/api/v1/chat", json={"id": sid, "message": "while redis is down"})
        assert refused.status_code == 503
        assert refused.json()["error"]["down"] == ["redis"]
        assert http.get("/readyz").status_code == 503
        redis.start()
        # The turn ended while Redis was down; its lease is released once Redis is back.
        again = wait_until(
            lambda: (
                (
                    r := stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "back"})
                ).status
                == 200
                and r
            ),
            timeout=10,
            interval=0.5,
        )
        assert_well_formed(again)
        history = http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
