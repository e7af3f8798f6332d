"""Two `copilot serve` replicas on one database and Redis: resume or stop a turn from the other."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.devtools.fake_upstream import FakeUpstreamHandle
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

PREFIX = f"rep-{uuid.uuid4().hex[:8]}"


def _env(fake: FakeUpstreamHandle, database_url: str, redis_url: str) -> dict[str, str]:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_REDIS_KEY_PREFIX=PREFIX,
        COPILOT_HEARTBEAT_S="0.5",
        COPILOT_FLUSH_INTERVAL_S="0.2",
        COPILOT_LEASE_TTL_S="1",
    )


@pytest.fixture(scope="module")
def replicas(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Served]]:
    env = _env(fake, database_url, redis_url)
    with (
        serve(env, tmp_path_factory.mktemp("a")) as a,
        serve(env, tmp_path_factory.mktemp("b")) as b,
    ):
        yield a, b


def test_resume_on_the_other_replica_right_after_the_start_replays_the_turn(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    sid = f"rep-{uuid.uuid4().hex[:8]}"
    sock = start_turn_raw(a, sid, "[[fake:text tokens=40 rate=80]]")
    try:
        with b.client() as http:
            resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
    finally:
        sock.close()
    assert_well_formed(resumed)
    assert len(resumed.text.split()) == 40


def test_stop_on_one_replica_then_send_at_once_is_accepted(replicas: tuple[Served, Served]) -> None:
    a, _ = replicas
    sid = f"stop-{uuid.uuid4().hex[:8]}"
    sock = start_turn_raw(a, sid, "[[fake:text tokens=500 rate=50]]")
    try:
        with a.client() as http:
            assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
            follow = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "next"})
    finally:
        sock.close()
    assert_well_formed(follow)


def test_stop_on_the_other_replica_ends_the_turn_and_a_message_sent_at_once_is_accepted(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    sid = f"xstop-{uuid.uuid4().hex[:8]}"
    sock = start_turn_raw(a, sid, "[[fake:text tokens=500 rate=50]]")
    try:
        with b.client() as http:
            assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
            follow = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "next"})
            statuses = [t["status"] for t in turns(http, sid)]
    finally:
        sock.close()
    assert_well_formed(follow)
    assert statuses == ["stopped", "completed"]
    assert "stopped from another replica" in a.log()


def test_a_resume_whose_log_is_gone_is_answered_from_postgres(
    replicas: tuple[Served, Served], redis_url: str
) -> None:
    a, b = replicas
    sid = f"gone-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    sock = start_turn_raw(a, sid, "[[fake:text tokens=60 rate=60]]")
    try:
        for key in client.scan_iter(f"{PREFIX}:{{{sid}}}:events:*"):
            client.delete(key)
        with b.client() as http:
            resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
    finally:
        sock.close()
    assert_well_formed(resumed)
    assert len(resumed.text.split()) == 60
    assert resumed.chunks[-1]["finishReason"] == "stop"


def test_resume_of_a_turn_whose_replica_died_ends_with_interrupted(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    replicas: tuple[Served, Served],
) -> None:
    _, b = replicas
    sid = f"dead-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    with serve(_env(fake, database_url, redis_url), tmp_path) as doomed:
        sock = start_turn_raw(doomed, sid, "[[fake:text tokens=500 rate=50]]")
        with b.client() as http:
            wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["status"] == "running")
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        sock.close()
    for key in client.scan_iter(f"{PREFIX}:{{{sid}}}:events:*"):
        client.delete(key)
    with b.client() as http:
        resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
    assert_well_formed(resumed)
    assert resumed.error is not None
    assert resumed.error["code"] == "interrupted"


def test_delete_on_the_other_replica_stops_the_turn_before_deleting(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    sid = f"rep-{uuid.uuid4().hex[:8]}"
    sock = start_turn_raw(a, sid, "[[fake:text tokens=400 rate=40]]")
    try:
        with b.client() as http:
            wait_until(lambda: [t for t in turns(http, sid) if t["status"] == "running"])
            assert http.delete(f"/api/v1/sessions/{sid}").status_code == 204
            assert http.get(f"/api/v1/sessions/{sid}").status_code == 404
        with a.client() as http:
            assert http.get(f"/api/v1/sessions/{sid}").status_code == 404
            # The id is free again at once: no lease of the stopped turn is left behind.
            fresh = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "again"})
        assert_well_formed(fresh)
        assert fresh.chunks[-1]["finishReason"] == "stop"
    finally:
        sock.close()


def test_resume_from_the_eventlog_is_not_cut_by_a_silence_longer_than_the_redis_timeout(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    replicas: tuple[Served, Served],
) -> None:
    # The reader used to block in XREAD for a whole heartbeat, longer than redis-py's 5 s
    # socket timeout: a resume was cut after 5 s without chunks.
    a, _ = replicas
    sid = f"slow-{uuid.uuid4().hex[:8]}"
    env = {**_env(fake, database_url, redis_url), "COPILOT_HEARTBEAT_S": "8"}
    with serve(env, tmp_path) as b:
        sock = start_turn_raw(a, sid, "[[fake:text tokens=2 rate=0.15]]")  # 6.7 s between
        try:
            with b.client() as http:
                resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
        finally:
            sock.close()
    assert_well_formed(resumed)
    assert len(resumed.text.split()) == 2
    assert resumed.chunks[-1]["finishReason"] == "stop"


def test_a_client_tailing_a_turn_whose_replica_is_killed_ends_within_the_lease_ttl(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    replicas: tuple[Served, Served],
) -> None:
    _, b = replicas
    sid = f"kill-{uuid.uuid4().hex[:8]}"
    with serve(_env(fake, database_url, redis_url), tmp_path) as doomed:
        sock = start_turn_raw(doomed, sid, "[[fake:text tokens=500 rate=50]]")
        with b.client() as http, http.stream("GET", f"/api/v1/chat/{sid}/stream") as response:
            body = b""
            pieces = response.iter_raw()
            while b'"text-delta"' not in body:
                body += next(pieces)
            doomed.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            for piece in pieces:
                body += piece
            ended_in = time.monotonic() - killed_at
            headers, status = response.headers, response.status_code
        sock.close()
    chunks, ids, comments, done = parse_sse(body)
    tailed = StreamResult(status, headers, chunks, ids, comments, done, body)
    assert_well_formed(tailed)
    assert tailed.error is not None
    assert tailed.error["code"] == "interrupted"
    assert ended_in < 1 + 5  # COPILOT_LEASE_TTL_S, plus a few of the reader's idle blocks
