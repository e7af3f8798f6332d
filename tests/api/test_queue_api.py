"""A session's queue through the sessions REST API, in-process: its length on the session,
its waiting messages at the end of the history, and cancelling one.

The rows are queued as `POST /chat` queues them (`MessageQueue.add`), by a replica that is
not live, so that nothing here starts their turns; `test_queue_api_served.py` queues real
messages while a real turn runs.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.lifespan import AppState
from app.store.messages import MessageRepository
from app.store.queue import MessageQueue
from tests.conftest import bearer


def _state(app: FastAPI) -> AppState:
    state: AppState = app.state.copilot
    return state


async def _queue(app: FastAPI, session_id: str, message_id: str, kind: str = "turn") -> None:
    await MessageQueue(_state(app).turn_rows.pool).add(
        session_id=session_id,
        user_id="alice",
        message_id=message_id,
        parts=[{"type": "text", "text": f"text of {message_id}"}],
        metadata={"client": "web"},
        kind=kind,
        accepted_by="no-such-replica",
        limit=10,
    )


async def _history(app: FastAPI, session_id: str, message_id: str) -> None:
    async with _state(app).sessions() as db:
        await MessageRepository(db).append(
            session_id, message_id=message_id, role="user", parts=[{"type": "text", "text": "x"}]
        )
        await db.commit()


async def _set_status(app: FastAPI, session_id: str, message_id: str, status: str) -> None:
    await _state(app).turn_rows.pool.execute(
        "UPDATE queued_messages SET status = $3 WHERE session_id = $1 AND message_id = $2",
        session_id,
        message_id,
        status,
    )


@pytest.fixture
def alice(settings: Settings) -> dict[str, str]:
    return bearer(settings, "alice")


async def _get(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_waiting_messages_show_on_the_session_and_after_the_history(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await client.post("/api/v1/sessions", json={"id": "q1"}, headers=alice)
    await client.post("/api/v1/sessions", json={"id": "q0"}, headers=alice)
    await _history(app, "q1", "old-1")
    await _history(app, "q1", "old-2")
    await _queue(app, "q1", "wait-1")
    await _queue(app, "q1", "wait-2", kind="steer")
    await _queue(app, "q1", "wait-3")

    session = await _get(client, "/api/v1/sessions/q1", alice)
    assert session["queue_length"] == 3
    assert session["status"] == "queued"  # no turn runs, messages wait
    page = await _get(client, "/api/v1/sessions", alice)
    mine = [s for s in page["sessions"] if s["id"] in ("q0", "q1")]  # alice has others
    assert {s["id"]: (s["queue_length"], s["status"]) for s in mine} == {
        "q1": (3, "queued"),
        "q0": (0, "idle"),
    }

    messages = (await _get(client, "/api/v1/sessions/q1/messages", alice))["messages"]
    assert [m["id"] for m in messages] == ["old-1", "old-2", "wait-1", "wait-2", "wait-3"]
    assert "status" not in messages[1]["metadata"]
    queued = messages[2:]
    assert [m["role"] for m in queued] == ["user"] * 3
    assert [m["metadata"]["position"] for m in queued] == [1, 2, 3]
    assert [m["metadata"]["onConflict"] for m in queued] == ["enqueue", "steer", "enqueue"]
    assert {m["metadata"]["status"] for m in queued} == {"queued"}
    assert queued[0]["metadata"]["client"] == "web"  # the message's own metadata is kept
    assert "createdAt" in queued[0]["metadata"]
    assert queued[0]["parts"] == [{"type": "text", "text": "text of wait-1"}]

    # `limit` pages the history; the queue follows the newest page only.
    newest = await _get(client, "/api/v1/sessions/q1/messages?limit=1", alice)
    assert [m["id"] for m in newest["messages"]] == ["old-2", "wait-1", "wait-2", "wait-3"]
    assert newest["has_more"] is True
    older = await _get(client, "/api/v1/sessions/q1/messages?before=old-2", alice)
    assert [m["id"] for m in older["messages"]] == ["old-1"]


async def test_started_steered_and_cancelled_messages_are_not_listed_from_the_queue(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await client.post("/api/v1/sessions", json={"id": "q2"}, headers=alice)
    for message_id in ("a", "b", "c", "d"):
        await _queue(app, "q2", message_id)
    await _set_status(app, "q2", "a", "started")
    await _history(app, "q2", "a")  # a started message is in the history
    await _set_status(app, "q2", "b", "steered")  # inside a reply, as a data-steer part
    await _set_status(app, "q2", "c", "cancelled")
    messages = (await _get(client, "/api/v1/sessions/q2/messages", alice))["messages"]
    assert [(m["id"], m["metadata"].get("position")) for m in messages] == [("a", None), ("d", 1)]
    assert (await _get(client, "/api/v1/sessions/q2", alice))["queue_length"] == 1


async def test_a_message_read_as_queued_and_started_meanwhile_is_listed_once(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await client.post("/api/v1/sessions", json={"id": "q3"}, headers=alice)
    await _queue(app, "q3", "racing")
    await _history(app, "q3", "racing")  # its start moved it, its row still says queued
    messages = (await _get(client, "/api/v1/sessions/q3/messages", alice))["messages"]
    assert [m["id"] for m in messages] == ["racing"]
    assert "status" not in messages[0]["metadata"]


async def test_cancelling_a_waiting_message(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await client.post("/api/v1/sessions", json={"id": "q4"}, headers=alice)
    await _queue(app, "q4", "first")
    await _queue(app, "q4", "second")
    response = await client.delete("/api/v1/sessions/q4/messages/first", headers=alice)
    assert response.status_code == 204
    assert response.content == b""
    # Again: the same result, the same answer.
    again = await client.delete("/api/v1/sessions/q4/messages/first", headers=alice)
    assert again.status_code == 204
    session = await _get(client, "/api/v1/sessions/q4", alice)
    assert session["queue_length"] == 1
    messages = (await _get(client, "/api/v1/sessions/q4/messages", alice))["messages"]
    assert [(m["id"], m["metadata"]["position"]) for m in messages] == [("second", 1)]
    await client.delete("/api/v1/sessions/q4/messages/second", headers=alice)
    session = await _get(client, "/api/v1/sessions/q4", alice)
    assert (session["queue_length"], session["status"]) == (0, "idle")


@pytest.mark.parametrize("status", ["started", "steered"])
async def test_a_message_that_started_is_409_message_started(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str], status: str
) -> None:
    await client.post("/api/v1/sessions", json={"id": "q5"}, headers=alice)
    await _queue(app, "q5", "gone")
    await _set_status(app, "q5", "gone", status)
    response = await client.delete("/api/v1/sessions/q5/messages/gone", headers=alice)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "message_started"
    assert error["status"] == status
    assert "/api/v1/chat/q5/stop" in error["message"]
    row = await _state(app).turn_rows.pool.fetchval(
        "SELECT status FROM queued_messages WHERE message_id = 'gone'"
    )
    assert row == status


async def test_a_history_message_is_409_and_an_unknown_one_404(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await client.post("/api/v1/sessions", json={"id": "q6"}, headers=alice)
    await _history(app, "q6", "said")
    said = await client.delete("/api/v1/sessions/q6/messages/said", headers=alice)
    assert said.status_code == 409
    assert said.json()["error"]["code"] == "message_not_queued"
    unknown = await client.delete("/api/v1/sessions/q6/messages/never", headers=alice)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "message_not_found"
    bad = await client.delete("/api/v1/sessions/q6/messages/" + "x" * 129, headers=alice)
    assert bad.status_code == 422


async def test_another_users_queue_is_404_and_untouched(
    app: FastAPI, client: httpx.AsyncClient, alice: dict[str, str], settings: Settings
) -> None:
    await client.post("/api/v1/sessions", json={"id": "q7"}, headers=alice)
    await _queue(app, "q7", "mine")
    mallory = bearer(settings, "mallory")
    cancel = await client.delete("/api/v1/sessions/q7/messages/mine", headers=mallory)
    unknown = await client.delete("/api/v1/sessions/q-none/messages/mine", headers=mallory)
    assert cancel.status_code == unknown.status_code == 404
    assert cancel.json()["error"]["code"] == unknown.json()["error"]["code"] == "session_not_found"
    listing = await client.get("/api/v1/sessions/q7/messages", headers=mallory)
    assert listing.status_code == 404
    messages = (await _get(client, "/api/v1/sessions/q7/messages", alice))["messages"]
    assert [(m["id"], m["metadata"]["status"]) for m in messages] == [("mine", "queued")]
