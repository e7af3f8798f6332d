"""Two users on one real `copilot serve`: another user's session id is 404 on every route and
nothing the intruder sends has an effect (no turn stopped, no lease taken, no key, no row).

Regression tests of the adversarial pass (hardening issue, items 1-3 and 9).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from pydantic import SecretStr

from app.api.auth import issue_token
from app.config import AuthSettings
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

SECRET = "tenancy-test-secret-that-is-long-enough"
SLOW_TOKENS = 500
SLOW = f"[[fake:text tokens={SLOW_TOKENS} rate=50]]"  # 10 s of streaming


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` with JWT auth, so that alice and bob are two users."""
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_JWT_SECRET=SECRET,
        COPILOT_HEARTBEAT_S="0.5",
        COPILOT_FLUSH_INTERVAL_S="0.2",
        COPILOT_LEASE_TTL_S="3",
    )
    with serve(env, tmp_path_factory.mktemp("tenancy")) as server:
        server.headers["x-prefix"] = env["COPILOT_REDIS_KEY_PREFIX"]
        yield server


def client_of(served: Served, user: str) -> httpx.Client:
    token = issue_token(AuthSettings(jwt_secret=SecretStr(SECRET)), user)
    return httpx.Client(
        base_url=served.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@pytest.fixture
def alice(served: Served) -> Iterator[httpx.Client]:
    with client_of(served, "alice") as client:
        yield client


@pytest.fixture
def bob(served: Served) -> Iterator[httpx.Client]:
    with client_of(served, "bob") as client:
        yield client


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


class Database:
    """Plain reads of the test database, from synchronous tests."""

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def value(self, query: str, *args: Any) -> Any:
        async def fetch() -> Any:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetchval(query, *args)
            finally:
                await conn.close()

        return asyncio.run(fetch())


@pytest.fixture(scope="module")
def db(database_url: str) -> Database:
    return Database(database_url)


def new_id() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def chat(client: httpx.Client, session_id: str, text_: str, **extra: Any) -> StreamResult:
    return stream(
        client, "POST", "/api/v1/chat", json={"id": session_id, "message": text_, **extra}
    )


def keys(store: redis.Redis, served: Served) -> dict[bytes, bytes | None]:
    """Every key of this server, with the lease values (what an intruder could disturb)."""
    found = {}
    for key in store.scan_iter(match=f"{served.headers['x-prefix']}:*"):
        found[key] = store.get(key) if key.endswith(b":lease") else None
    return found


def rows(db: Database, session_id: str) -> tuple[Any, ...]:
    """What is stored for this id that an intruder could change (a running turn of the
    owner's changes its own reply's parts meanwhile: those are left out)."""
    return (
        db.value(
            "SELECT json_agg(json_build_array(message_id, role, superseded_at) ORDER BY seq)::text"
            " FROM chat_messages WHERE session_id = $1",
            session_id,
        ),
        db.value("SELECT count(*) FROM turns WHERE session_id = $1", session_id),
        db.value(
            "SELECT json_build_array(user_id, title, metadata, active_turn_id, on_conflict)::text"
            " FROM chat_sessions WHERE id = $1",
            session_id,
        ),
        db.value(
            "SELECT json_agg(json_build_array(message_id, status) ORDER BY id)::text"
            " FROM queued_messages WHERE session_id = $1",
            session_id,
        ),
    )


def running(client: httpx.Client, session_id: str) -> bool:
    """Whether the session exists and has a turn running."""
    response = client.get(f"/api/v1/sessions/{session_id}/turns")
    return response.status_code == 200 and any(
        t["status"] == "running" for t in response.json()["turns"]
    )


def intrusions(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route bob can aim at alice's session id."""
    chat_body = {"id": session_id, "message": "hello"}
    return [
        ("GET", f"/api/v1/sessions/{session_id}", None),
        ("PATCH", f"/api/v1/sessions/{session_id}", {"title": "mine now"}),
        ("PATCH", f"/api/v1/sessions/{session_id}", {"on_conflict": "interrupt"}),
        ("DELETE", f"/api/v1/sessions/{session_id}", None),
        ("DELETE", f"/api/v1/sessions/{session_id}/messages/m-1", None),
        ("GET", f"/api/v1/sessions/{session_id}/messages", None),
        ("GET", f"/api/v1/sessions/{session_id}/turns", None),
        ("POST", f"/api/v1/chat/{session_id}/stop", None),
        ("GET", f"/api/v1/chat/{session_id}/stream", None),
        ("POST", "/api/v1/chat", chat_body),
        ("POST", "/api/v1/chat", {**chat_body, "on_conflict": "interrupt"}),
        ("POST", "/api/v1/chat", {**chat_body, "on_conflict": "enqueue"}),
        ("POST", "/api/v1/chat", {"id": session_id, "trigger": "regenerate-message"}),
        (
            "POST",
            "/api/v1/chat",
            {
                "id": session_id,
                "trigger": "submit-message",
                "messages": [
                    {"id": "m-1", "role": "user", "parts": [{"type": "text", "text": "x"}]}
                ],
            },
        ),
    ]


def answer(
    client: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> tuple[int, Any]:
    response = client.request(method, path, json=body)
    payload = response.json() if response.content else None
    return response.status_code, payload


def unknown_answer(
    client: httpx.Client, method: str, path: str, body: Any, real: str
) -> tuple[int, Any]:
    """What the same request gets for an id nobody uses (GET-like routes), with the id put back."""
    other = new_id()
    status, payload = answer(
        client, method, path.replace(real, other), _swap(body, real, other) if body else None
    )
    if payload is not None:
        payload = _swap(payload, other, real)
    return status, payload


def _swap(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _swap(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    return value


@pytest.mark.parametrize("state", ["idle", "running"])
def test_another_users_session_is_404_on_every_route_and_nothing_changes(
    state: str,
    served: Served,
    alice: httpx.Client,
    bob: httpx.Client,
    store: redis.Redis,
    db: Database,
) -> None:
    session_id = new_id()
    assert_well_formed(chat(alice, session_id, "first message"))
    background: list[StreamResult] = []
    runner = None
    if state == "running":
        runner = threading.Thread(
            target=lambda: background.append(chat(alice, session_id, SLOW)), daemon=True
        )
        runner.start()
        wait_until(lambda: running(alice, session_id))
    before_keys, before_rows = keys(store, served), rows(db, session_id)

    for method, path, body in intrusions(session_id):
        status, payload = answer(bob, method, path, body)
        if method == "POST" and path == "/api/v1/chat":
            # An unknown id would start a chat: someone else's is the same 404 as GET's.
            assert status == 404, (path, body, payload)
            assert (
                payload
                == unknown_answer(bob, "GET", f"/api/v1/sessions/{session_id}", None, session_id)[1]
            )
        else:
            assert (status, payload) == unknown_answer(bob, method, path, body, session_id), path
        assert keys(store, served) == before_keys, (method, path, body)
        assert rows(db, session_id) == before_rows, (method, path, body)
    if runner is not None:
        assert running(alice, session_id), "the turn ended before the intrusions did"

    if runner is not None:
        runner.join(60)
        result = background[0]
        assert_well_formed(result)
        assert result.chunks[-1]["finishReason"] == "stop"  # bob stopped nothing
        assert len(result.text.split()) == SLOW_TOKENS
    assert alice.get(f"/api/v1/sessions/{session_id}").json()["title"] != "mine now"


def test_an_intruder_looping_on_a_session_never_blocks_its_owner(
    served: Served, alice: httpx.Client, bob: httpx.Client, store: redis.Redis
) -> None:
    session_id = new_id()
    assert_well_formed(chat(alice, session_id, "hello"))
    baseline = len(keys(store, served))
    stop = threading.Event()
    refused: list[int] = []

    def intrude() -> None:
        with client_of(served, "bob") as intruder:
            while not stop.is_set():
                refused.append(
                    intruder.post(
                        "/api/v1/chat",
                        json={"id": session_id, "message": "x", "on_conflict": "interrupt"},
                    ).status_code
                )

    thread = threading.Thread(target=intrude, daemon=True)
    thread.start()
    try:
        for n in range(5):
            result = chat(alice, session_id, f"message {n} [[fake:text tokens=20 rate=200]]")
            assert_well_formed(result)
            assert result.chunks[-1]["finishReason"] == "stop"
    finally:
        stop.set()
        thread.join(10)
    assert refused
    assert set(refused) == {404}
    wait_until(lambda: len(keys(store, served)) <= baseline + 5, timeout=5)
    # Alice's own five turns each leave one EventLog (a cache with a TTL); bob left nothing.
    assert len(keys(store, served)) == baseline + 5


def test_a_refused_start_of_the_owner_leaves_no_eventlog_key(
    served: Served, alice: httpx.Client, store: redis.Redis, db: Database
) -> None:
    session_id = new_id()
    first = {"id": "m-first", "role": "user", "parts": [{"type": "text", "text": "one"}]}
    second = {"id": "m-second", "role": "user", "parts": [{"type": "text", "text": "two"}]}
    for message in (first, second):
        body = {"id": session_id, "messages": [message], "trigger": "submit-message"}
        assert_well_formed(stream(alice, "POST", "/api/v1/chat", json=body))
    before_keys, before_rows = keys(store, served), rows(db, session_id)
    body = {"id": session_id, "messages": [first], "trigger": "submit-message"}
    refused = alice.post("/api/v1/chat", json=body)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "message_not_latest"
    assert keys(store, served) == before_keys
    assert rows(db, session_id) == before_rows


def test_creating_a_session_with_a_taken_id_answers_the_same_whoever_holds_it(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    session_id = new_id()
    assert alice.post("/api/v1/sessions", json={"id": session_id}).status_code == 201
    own = alice.post("/api/v1/sessions", json={"id": session_id})
    foreign = bob.post("/api/v1/sessions", json={"id": session_id})
    assert own.status_code == foreign.status_code == 409
    assert own.json() == foreign.json()


def test_a_turn_that_lost_its_lease_stops_and_cannot_overwrite_the_newer_turn(
    served: Served, alice: httpx.Client, store: redis.Redis, db: Database
) -> None:
    """Redis lost its data mid-turn (a restart without persistence, a failover)."""
    session_id = new_id()
    results: list[StreamResult] = []
    old = threading.Thread(
        target=lambda: results.append(chat(alice, session_id, "[[fake:text tokens=400 rate=40]]")),
        daemon=True,
    )
    old.start()
    wait_until(lambda: running(alice, session_id))
    lease = f"{served.headers['x-prefix']}:{{{session_id}}}:lease".encode()
    assert store.delete(lease) == 1

    newer = chat(alice, session_id, "a newer message")
    assert_well_formed(newer)
    assert newer.chunks[-1]["finishReason"] == "stop"
    old.join(15)  # the old turn notices at its next lease refresh (a third of 3 s)
    assert not old.is_alive()
    stale = results[0]
    assert_well_formed(stale)
    assert stale.error is not None
    assert stale.error["code"] == "interrupted"

    listed = {t["status"] for t in turns(alice, session_id)}
    assert listed == {"interrupted", "completed"}
    session = alice.get(f"/api/v1/sessions/{session_id}").json()
    assert session["active_turn_id"] is None
    newest = db.value(
        "SELECT status FROM chat_messages WHERE session_id = $1 AND role = 'assistant' "
        "ORDER BY seq DESC LIMIT 1",
        session_id,
    )
    assert newest == "complete"
