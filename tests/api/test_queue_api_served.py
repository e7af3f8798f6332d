"""A session's queue through the REST API on a real `copilot serve`: messages sent with
`on_conflict: "enqueue"` while a turn runs show on the session (`queue_length`) and at the end
of the history; one cancelled with `DELETE /sessions/{id}/messages/{mid}` never runs; a
session's own policy applies when the request says none, and the request's wins.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.api.auth import issue_token
from app.config import AuthSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, StreamResult, serve, stream, turns, upstream_env, wait_until

SECRET = "queue-api-test-secret-that-is-long-enough"
SLOW = "[[fake:text tokens=500 rate=50]]"  # 10 s of streaming, unless stopped


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` with JWT auth (alice and bob) and the server's default policy, reject."""
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_JWT_SECRET=SECRET,
        COPILOT_HEARTBEAT_S="0.5",
        COPILOT_FLUSH_INTERVAL_S="0.2",
    )
    with serve(env, tmp_path_factory.mktemp("queue-api")) as server:
        yield server


def client_of(served: Served, user: str) -> httpx.Client:
    token = issue_token(AuthSettings(jwt_secret=SecretStr(SECRET)), user)
    return httpx.Client(
        base_url=served.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


@pytest.fixture
def alice(served: Served) -> Iterator[httpx.Client]:
    with client_of(served, "alice") as client:
        yield client


@pytest.fixture
def bob(served: Served) -> Iterator[httpx.Client]:
    with client_of(served, "bob") as client:
        yield client


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads reading streams while the test goes on."""
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def new_id() -> str:
    return f"qa-{uuid.uuid4().hex[:12]}"


def send(served: Served, session_id: str, message_id: str, text: str, **extra: Any) -> StreamResult:
    """POST a user message (its id ours) and read its whole stream, as alice."""
    body = {
        "id": session_id,
        "messages": [{"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}],
        **extra,
    }
    with client_of(served, "alice") as client:
        return stream(client, "POST", "/api/v1/chat", json=body)


def session(client: httpx.Client, session_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def messages(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


def queued(client: httpx.Client, session_id: str) -> list[tuple[str, int]]:
    """The listed waiting messages: (id, position)."""
    return [
        (m["id"], m["metadata"]["position"])
        for m in messages(client, session_id)
        if m["metadata"].get("status") == "queued"
    ]


def start_slow(
    pool: ThreadPoolExecutor, served: Served, alice: httpx.Client, session_id: str
) -> Future[StreamResult]:
    """A slow turn of alice's, running once this returns."""
    first = pool.submit(send, served, session_id, "m-slow", SLOW)

    def running() -> bool:
        response = alice.get(f"/api/v1/sessions/{session_id}")
        return response.status_code == 200 and response.json()["status"] == "running"

    wait_until(running)
    return first


def stop(alice: httpx.Client, session_id: str) -> None:
    assert alice.post(f"/api/v1/chat/{session_id}/stop").status_code in (202, 204)


def all_done(alice: httpx.Client, session_id: str, count: int) -> list[dict[str, Any]]:
    """The session's turns once `count` of them have ended and nothing waits."""

    def ended() -> list[dict[str, Any]] | None:
        listed = turns(alice, session_id)
        finished = [t for t in listed if t["status"] != "running"]
        idle = session(alice, session_id)["status"] == "idle"
        return listed if len(finished) == count and idle else None

    return list(wait_until(ended, timeout=40))


def test_queued_messages_are_listed_and_one_cancelled_never_runs(
    served: Served, alice: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    sid = new_id()
    first = start_slow(pool, served, alice, sid)
    one = pool.submit(send, served, sid, "m-one", "first in line", on_conflict="enqueue")
    wait_until(lambda: session(alice, sid)["queue_length"] == 1)
    two = pool.submit(send, served, sid, "m-two", "second in line", on_conflict="enqueue")
    wait_until(lambda: session(alice, sid)["queue_length"] == 2)

    shown = session(alice, sid)
    assert (shown["status"], shown["queue_length"], shown["on_conflict"]) == ("running", 2, None)
    listed = next(s for s in alice.get("/api/v1/sessions").json()["sessions"] if s["id"] == sid)
    assert listed["queue_length"] == 2
    history = messages(alice, sid)
    assert [m["id"] for m in history] == ["m-slow", "m-one", "m-two"]  # the reply is running
    assert [m["metadata"].get("position") for m in history] == [None, 1, 2]
    assert history[1]["metadata"]["onConflict"] == "enqueue"
    assert history[1]["parts"] == [{"type": "text", "text": "first in line"}]

    # The first in line is cancelled: its stream says so and ends; the second moves up.
    assert alice.delete(f"/api/v1/sessions/{sid}/messages/m-one").status_code == 204
    cancelled = one.result(timeout=20)
    assert cancelled.status == 200
    assert cancelled.done
    statuses = [c["data"]["status"] for c in cancelled.of("data-status")]
    assert statuses[0] == "queued"
    assert statuses[-1] == "cancelled"
    assert cancelled.of("text-delta") == []
    assert queued(alice, sid) == [("m-two", 1)]
    assert session(alice, sid)["queue_length"] == 1

    stop(alice, sid)  # the slow turn ends; the second message's turn starts
    assert first.result(timeout=20).done
    wait_until(lambda: len(turns(alice, sid)) == 2)
    late = alice.delete(f"/api/v1/sessions/{sid}/messages/m-two")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "message_started"
    assert f"/api/v1/chat/{sid}/stop" in late.json()["error"]["message"]
    second = two.result(timeout=30)
    assert second.done
    assert second.text  # it ran, with its own reply

    done = all_done(alice, sid, 2)
    assert [t["user_message_id"] for t in done] == ["m-slow", "m-two"]
    history = messages(alice, sid)
    ids = [m["id"] for m in history]
    assert "m-one" not in ids
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert ids[2] == "m-two"
    assert all("status" not in m["metadata"] for m in history)
    after = session(alice, sid)
    assert (after["status"], after["queue_length"]) == ("idle", 0)
    # Cancelled stays cancelled (204 again); history messages were never queued.
    assert alice.delete(f"/api/v1/sessions/{sid}/messages/m-one").status_code == 204
    said = alice.delete(f"/api/v1/sessions/{sid}/messages/m-slow")
    assert (said.status_code, said.json()["error"]["code"]) == (409, "message_not_queued")
    unknown = alice.delete(f"/api/v1/sessions/{sid}/messages/m-never")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "message_not_found")


def test_the_sessions_policy_applies_and_the_requests_wins(
    served: Served, alice: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    sid = new_id()
    created = alice.post("/api/v1/sessions", json={"id": sid})
    assert created.status_code == 201
    patched = alice.patch(f"/api/v1/sessions/{sid}", json={"on_conflict": "enqueue"})
    assert patched.status_code == 200
    assert patched.json()["on_conflict"] == "enqueue"
    first = start_slow(pool, served, alice, sid)

    # No on_conflict in the request: the session's policy (the server's is reject) queues it.
    waiting = pool.submit(send, served, sid, "m-policy", "queued by the session's policy")
    wait_until(lambda: session(alice, sid)["queue_length"] == 1)
    assert queued(alice, sid) == [("m-policy", 1)]
    # The request's own policy wins over the session's.
    refused = send(served, sid, "m-refused", "no thanks", on_conflict="reject")
    assert refused.status == 409
    assert b"turn_in_progress" in refused.body
    # Cleared, the server's default (reject) applies again.
    cleared = alice.patch(f"/api/v1/sessions/{sid}", json={"on_conflict": None})
    assert cleared.json()["on_conflict"] is None
    assert cleared.json()["queue_length"] == 1
    default = send(served, sid, "m-default", "refused by the server's default")
    assert default.status == 409
    assert session(alice, sid)["queue_length"] == 1

    stop(alice, sid)
    assert first.result(timeout=20).done
    ran = waiting.result(timeout=30)
    assert ran.done
    assert ran.text
    done = all_done(alice, sid, 2)
    assert [t["user_message_id"] for t in done] == ["m-slow", "m-policy"]
    ids = [m["id"] for m in messages(alice, sid)]
    assert "m-refused" not in ids
    assert "m-default" not in ids


def test_another_user_cannot_see_or_cancel_the_queue(
    served: Served, alice: httpx.Client, bob: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    sid = new_id()
    first = start_slow(pool, served, alice, sid)
    waiting = pool.submit(send, served, sid, "m-mine", "mine", on_conflict="enqueue")
    wait_until(lambda: session(alice, sid)["queue_length"] == 1)

    never = new_id()
    for method, path, body in [
        ("DELETE", f"/api/v1/sessions/{sid}/messages/m-mine", None),
        ("PATCH", f"/api/v1/sessions/{sid}", {"on_conflict": "interrupt"}),
        ("GET", f"/api/v1/sessions/{sid}/messages", None),
        ("GET", f"/api/v1/sessions/{sid}", None),
    ]:
        intruder = bob.request(method, path, json=body)
        unknown = bob.request(method, path.replace(sid, never), json=body)
        assert intruder.status_code == unknown.status_code == 404, (method, path)
        theirs, nobody = intruder.json()["error"], unknown.json()["error"]
        assert theirs["code"] == nobody["code"] == "session_not_found"
        assert theirs["message"].replace(sid, never) == nobody["message"]

    assert queued(alice, sid) == [("m-mine", 1)]
    shown = session(alice, sid)
    assert (shown["on_conflict"], shown["queue_length"], shown["status"]) == (None, 1, "running")
    stop(alice, sid)
    assert first.result(timeout=20).done
    assert waiting.result(timeout=30).text  # bob's DELETE had no effect: it ran
    assert [t["user_message_id"] for t in all_done(alice, sid, 2)] == ["m-slow", "m-mine"]
