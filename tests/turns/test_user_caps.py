"""COPILOT_MAX_ACTIVE_TURNS_PER_USER on two `copilot serve` replicas on one database and Redis:
the cap holds across replicas, a refused start leaves nothing behind, another user is not
affected, a dead replica's slots heal, and racing starts let exactly the cap in.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from pydantic import SecretStr

from app.api.auth import issue_token
from app.config import AuthSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, assert_well_formed, serve, stream, upstream_env, wait_until

SECRET = "user-caps-test-secret-that-is-long-enough"
PREFIX = f"cap-{uuid.uuid4().hex[:8]}"
CAP = 2
SLOW = "[[fake:text tokens=200 rate=20]]"  # 10 s of streaming


def _env(fake: FakeUpstreamHandle, database_url: str, redis_url: str) -> dict[str, str]:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_REDIS_KEY_PREFIX=PREFIX,
        COPILOT_JWT_SECRET=SECRET,
        COPILOT_MAX_ACTIVE_TURNS_PER_USER=str(CAP),
        COPILOT_HEARTBEAT_S="0.5",
        COPILOT_FLUSH_INTERVAL_S="0.2",
        COPILOT_LEASE_TTL_S="3",
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


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def _auth(user: str) -> dict[str, str]:
    token = issue_token(AuthSettings(jwt_secret=SecretStr(SECRET)), user)
    return {"Authorization": f"Bearer {token}"}


def client_of(served: Served, user: str) -> httpx.Client:
    return httpx.Client(base_url=served.base_url, headers=_auth(user), timeout=60)


def post_raw(served: Served, user: str, session_id: str, message: str) -> tuple[int, socket.socket]:
    """POST a chat message on a raw socket; the answer's status, the socket left unread."""
    body = orjson.dumps({"id": session_id, "message": message})
    host, port = served.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = "".join(f"{k}: {v}\r\n" for k, v in _auth(user).items())
    sock.sendall(
        b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        + head.encode()
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )
    line = b""
    while not line.endswith(b"\r\n"):
        piece = sock.recv(1)
        assert piece, "the server closed the connection before answering"
        line += piece
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", line)
    assert match is not None, line
    return int(match.group(1)), sock


def slots(store: redis.Redis, user: str) -> list[str]:
    """The members of a user's slot set: `<session_id>:<turn_id>`."""
    return [m.decode() for m in store.zrange(f"{PREFIX}:user:{{{user}}}:turns", 0, -1)]


def session_keys(store: redis.Redis, session_id: str) -> list[bytes]:
    return list(store.scan_iter(f"{PREFIX}:{{{session_id}}}:*"))


def refusals(served: Served) -> float:
    text = httpx.get(served.base_url + "/metrics", timeout=30).text
    match = re.search(r"^copilot_user_cap_refusals_total ([0-9.e+]+)$", text, re.MULTILINE)
    assert match is not None
    return float(match.group(1))


def assert_refused_at_the_cap(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert int(answer.headers["retry-after"]) >= 1
    error = answer.json()["error"]
    assert error["code"] == "too_many_turns"
    assert str(CAP) in error["message"]


def test_the_cap_holds_across_replicas_and_a_refused_start_leaves_nothing_behind(
    replicas: tuple[Served, Served], store: redis.Redis
) -> None:
    a, b = replicas
    alice, bob = _user(), _user()
    s1, s2, s3 = (f"cap-{n}-{uuid.uuid4().hex[:8]}" for n in range(3))
    refused_before = refusals(a) + refusals(b)
    status1, sock1 = post_raw(a, alice, s1, SLOW)
    status2, sock2 = post_raw(b, alice, s2, SLOW)
    try:
        assert (status1, status2) == (200, 200)
        for served in (a, b):
            with client_of(served, alice) as http:
                third = http.post("/api/v1/chat", json={"id": s3, "message": "hello"})
                assert_refused_at_the_cap(third)
                # Nothing left of it: no session (so no message or turn row), no Redis key.
                assert http.get(f"/api/v1/sessions/{s3}").status_code == 404
        assert session_keys(store, s3) == []
        assert sorted(m.split(":")[0] for m in slots(store, alice)) == sorted([s1, s2])
        assert refusals(a) + refusals(b) == refused_before + 2

        # Another user's turns never count against alice's cap, nor hers against theirs.
        with client_of(a, bob) as http:
            answer = stream(http, "POST", "/api/v1/chat", json={"id": s3, "message": "hi"})
        assert answer.status == 200
        assert_well_formed(answer)

        # Once one of alice's turns ends, she can start again.
        with client_of(b, alice) as http:
            assert http.post(f"/api/v1/chat/{s1}/stop").status_code == 202
            s4 = f"cap-4-{uuid.uuid4().hex[:8]}"

            def started() -> bool:
                result = stream(http, "POST", "/api/v1/chat", json={"id": s4, "message": "hi"})
                if result.status == 429:
                    return False
                assert_well_formed(result)
                return True

            wait_until(started, timeout=30, interval=0.2)
    finally:
        sock1.close()
        sock2.close()
    with client_of(a, alice) as http:
        http.post(f"/api/v1/chat/{s2}/stop")
    wait_until(lambda: slots(store, alice) == [], timeout=30)


def test_an_interrupting_turn_is_not_refused_for_the_slot_of_the_turn_it_replaces(
    replicas: tuple[Served, Served], store: redis.Redis
) -> None:
    a, b = replicas
    carol = _user()
    s1, s2 = (f"int-{n}-{uuid.uuid4().hex[:8]}" for n in range(2))
    status1, sock1 = post_raw(a, carol, s1, SLOW)
    status2, sock2 = post_raw(b, carol, s2, SLOW)
    try:
        assert (status1, status2) == (200, 200)
        with client_of(b, carol) as http:
            body = {"id": s1, "message": "instead", "on_conflict": "interrupt"}
            answer = stream(http, "POST", "/api/v1/chat", json=body)
        assert answer.status == 200
        assert_well_formed(answer)
    finally:
        sock1.close()
        sock2.close()
    with client_of(a, carol) as http:
        http.post(f"/api/v1/chat/{s2}/stop")
    wait_until(lambda: slots(store, carol) == [], timeout=30)


def test_the_slots_of_a_replica_that_died_mid_turn_heal_by_themselves(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    replicas: tuple[Served, Served],
    store: redis.Redis,
) -> None:
    a, _ = replicas
    dave = _user()
    sessions = [f"dead-{n}-{uuid.uuid4().hex[:8]}" for n in range(3)]
    with serve(_env(fake, database_url, redis_url), tmp_path) as doomed:
        opened = [post_raw(doomed, dave, sid, SLOW) for sid in sessions[:2]]
        assert [status for status, _ in opened] == [200, 200]
        with client_of(a, dave) as http:
            assert_refused_at_the_cap(
                http.post("/api/v1/chat", json={"id": sessions[2], "message": "hi"})
            )
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        for _, sock in opened:
            sock.close()
    # Nobody refreshes the dead replica's slots: they expire with its leases (3 s here).
    with client_of(a, dave) as http:

        def started() -> bool:
            body = {"id": sessions[2], "message": "hi"}
            result = stream(http, "POST", "/api/v1/chat", json=body)
            if result.status == 429:
                return False
            assert_well_formed(result)
            return True

        wait_until(started, timeout=30, interval=0.2)


def test_racing_starts_for_the_last_slots_let_exactly_the_cap_in(
    replicas: tuple[Served, Served], store: redis.Redis
) -> None:
    erin = _user()
    sessions = [f"race-{n}-{uuid.uuid4().hex[:8]}" for n in range(6)]
    results: dict[str, tuple[int, socket.socket]] = {}
    barrier = threading.Barrier(len(sessions))

    def post(index: int, sid: str) -> None:
        barrier.wait(timeout=30)
        results[sid] = post_raw(replicas[index % 2], erin, sid, SLOW)

    threads = [threading.Thread(target=post, args=(n, sid)) for n, sid in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert len(results) == len(sessions)
        statuses = sorted(status for status, _ in results.values())
        assert statuses == [200] * CAP + [429] * (len(sessions) - CAP)
        winners = {sid for sid, (status, _) in results.items() if status == 200}
        assert {m.split(":")[0] for m in slots(store, erin)} == winners
        for sid in set(sessions) - winners:
            assert session_keys(store, sid) == []
    finally:
        for _, sock in results.values():
            sock.close()
    with client_of(replicas[0], erin) as http:
        for sid in winners:
            http.post(f"/api/v1/chat/{sid}/stop")
    wait_until(lambda: slots(store, erin) == [], timeout=30)
