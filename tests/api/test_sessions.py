"""The sessions REST API as a user sees it."""

from __future__ import annotations

import base64

import httpx
import pytest

from app.config import Settings
from tests.conftest import bearer


async def test_create_assigns_a_server_id(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post("/api/v1/sessions", json={}, headers=bearer(settings, "alice"))
    assert response.status_code == 201
    body = response.json()
    assert len(body["id"]) == 36
    assert body["status"] == "idle"
    assert body["usage"]["input_tokens"] == 0


async def test_create_accepts_a_client_id(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/api/v1/sessions",
        json={"id": "chat_1-A", "title": "Plans", "metadata": {"k": 1}},
        headers=bearer(settings, "alice"),
    )
    assert response.status_code == 201
    assert response.json()["title"] == "Plans"
    assert response.json()["metadata"] == {"k": 1}


async def test_create_with_a_taken_id_is_409(client: httpx.AsyncClient, settings: Settings) -> None:
    headers = bearer(settings, "alice")
    await client.post("/api/v1/sessions", json={"id": "dup"}, headers=headers)
    response = await client.post("/api/v1/sessions", json={"id": "dup"}, headers=headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "session_exists"


@pytest.mark.parametrize("bad_id", ["has space", "a/b", "x" * 129, "", "é"])
async def test_create_rejects_malformed_ids(
    client: httpx.AsyncClient, settings: Settings, bad_id: str
) -> None:
    response = await client.post(
        "/api/v1/sessions", json={"id": bad_id}, headers=bearer(settings, "alice")
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"][0]["field"] == "id"


async def test_malformed_json_body_is_422(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/api/v1/sessions",
        content=b"{not json",
        headers={**bearer(settings, "alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422


async def test_unknown_fields_are_422(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/api/v1/sessions", json={"titel": "typo"}, headers=bearer(settings, "alice")
    )
    assert response.status_code == 422
    assert "titel" in response.json()["error"]["message"]


async def test_title_above_the_limit_is_422(client: httpx.AsyncClient, settings: Settings) -> None:
    title = "t" * (settings.server.max_title_chars + 1)
    response = await client.post(
        "/api/v1/sessions", json={"title": title}, headers=bearer(settings, "alice")
    )
    assert response.status_code == 422
    assert "title" in response.json()["error"]["message"]


async def test_metadata_above_the_limit_is_422(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    metadata = {"blob": "x" * settings.server.max_metadata_bytes}
    response = await client.post(
        "/api/v1/sessions", json={"metadata": metadata}, headers=bearer(settings, "alice")
    )
    assert response.status_code == 422
    assert "metadata" in response.json()["error"]["message"]


async def test_body_above_max_body_bytes_is_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    big = {"metadata": {"blob": "x" * (settings.server.max_body_bytes + 10)}}
    response = await client.post("/api/v1/sessions", json=big, headers=bearer(settings, "alice"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_chunked_body_above_max_body_bytes_is_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(settings.server.max_body_bytes // 10_000 + 2):
            yield b"x" * 10_000

    response = await client.post(
        "/api/v1/sessions",
        content=chunks(),
        headers={**bearer(settings, "alice"), "content-type": "application/json"},
    )
    assert response.status_code == 413


async def test_list_is_newest_first_and_cursor_paged(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = bearer(settings, "alice")
    for i in range(5):
        await client.post("/api/v1/sessions", json={"id": f"s{i}"}, headers=headers)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/sessions", params=params, headers=headers)).json()
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["s4", "s3", "s2", "s1", "s0"]


async def test_a_forged_cursor_is_422(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get(
        "/api/v1/sessions", params={"cursor": "!!!"}, headers=bearer(settings, "alice")
    )
    assert response.status_code == 422


async def test_cursor_with_an_out_of_range_date_is_422_not_500(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    forged = base64.urlsafe_b64encode(b"9999-12-31T23:59:59-10:00|abc").decode()
    response = await client.get(
        "/api/v1/sessions", params={"cursor": forged}, headers=bearer(settings, "alice")
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_cursor"


async def test_limit_out_of_range_is_422(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get(
        "/api/v1/sessions", params={"limit": 0}, headers=bearer(settings, "alice")
    )
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "query.limit"


async def test_patch_renames_and_replaces_metadata(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = bearer(settings, "alice")
    await client.post("/api/v1/sessions", json={"id": "p1", "metadata": {"a": 1}}, headers=headers)
    response = await client.patch(
        "/api/v1/sessions/p1", json={"title": "New", "metadata": {"b": 2}}, headers=headers
    )
    assert response.status_code == 200
    assert response.json()["title"] == "New"
    assert response.json()["metadata"] == {"b": 2}
    again = (await client.get("/api/v1/sessions/p1", headers=headers)).json()
    assert again["title"] == "New"


async def test_a_session_has_its_own_on_conflict_policy(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = bearer(settings, "alice")
    created = await client.post(
        "/api/v1/sessions", json={"id": "pol", "on_conflict": "steer"}, headers=headers
    )
    assert created.status_code == 201
    assert created.json()["on_conflict"] == "steer"
    assert created.json()["queue_length"] == 0
    assert created.json()["status"] == "idle"

    async def patch(body: dict[str, object]) -> dict[str, object]:
        response = await client.patch("/api/v1/sessions/pol", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert (await patch({"on_conflict": "enqueue"}))["on_conflict"] == "enqueue"
    # Left out, it is kept; title and metadata are kept when only the policy changes.
    kept = await patch({"title": "Named"})
    assert kept["on_conflict"] == "enqueue"
    assert (await patch({"on_conflict": "interrupt"}))["title"] == "Named"
    # null clears it: the server's COPILOT_ON_CONFLICT applies again.
    cleared = await patch({"on_conflict": None})
    assert cleared["on_conflict"] is None
    assert cleared["title"] == "Named"
    shown = (await client.get("/api/v1/sessions/pol", headers=headers)).json()
    assert shown["on_conflict"] is None
    assert shown["queue_length"] == 0
    listed = (await client.get("/api/v1/sessions", headers=headers)).json()["sessions"]
    assert [(s["id"], s["on_conflict"], s["queue_length"]) for s in listed] == [("pol", None, 0)]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("policy", ["ignore", "REJECT", 1, ""])
async def test_an_unknown_on_conflict_policy_is_422(
    client: httpx.AsyncClient, settings: Settings, method: str, policy: object
) -> None:
    headers = bearer(settings, "alice")
    await client.post("/api/v1/sessions", json={"id": "pol"}, headers=headers)
    path = "/api/v1/sessions" if method == "POST" else "/api/v1/sessions/pol"
    response = await client.request(method, path, json={"on_conflict": policy}, headers=headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"][0]["field"] == "on_conflict"
    shown = (await client.get("/api/v1/sessions/pol", headers=headers)).json()
    assert shown["on_conflict"] is None


async def test_delete_removes_the_session(client: httpx.AsyncClient, settings: Settings) -> None:
    headers = bearer(settings, "alice")
    await client.post("/api/v1/sessions", json={"id": "d1"}, headers=headers)
    assert (await client.delete("/api/v1/sessions/d1", headers=headers)).status_code == 204
    assert (await client.get("/api/v1/sessions/d1", headers=headers)).status_code == 404
    assert (await client.delete("/api/v1/sessions/d1", headers=headers)).status_code == 404


async def test_messages_and_turns_of_a_new_session_are_empty(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = bearer(settings, "alice")
    await client.post("/api/v1/sessions", json={"id": "m1"}, headers=headers)
    messages = (await client.get("/api/v1/sessions/m1/messages", headers=headers)).json()
    assert messages == {"messages": [], "has_more": False}
    turns = (await client.get("/api/v1/sessions/m1/turns", headers=headers)).json()
    assert turns == {"turns": []}


async def test_unknown_session_is_404(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get("/api/v1/sessions/nope", headers=bearer(settings, "alice"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/sessions/owned", None),
        ("PATCH", "/api/v1/sessions/owned", {"title": "mine now"}),
        ("PATCH", "/api/v1/sessions/owned", {"on_conflict": "interrupt"}),
        ("DELETE", "/api/v1/sessions/owned", None),
        ("GET", "/api/v1/sessions/owned/messages", None),
        ("GET", "/api/v1/sessions/owned/turns", None),
        ("DELETE", "/api/v1/sessions/owned/messages/any-message", None),
    ],
)
async def test_another_users_session_is_404_on_every_route(
    client: httpx.AsyncClient, settings: Settings, method: str, path: str, body: object
) -> None:
    await client.post("/api/v1/sessions", json={"id": "owned"}, headers=bearer(settings, "alice"))
    response = await client.request(method, path, json=body, headers=bearer(settings, "mallory"))
    assert response.status_code == 404
    listing = (await client.get("/api/v1/sessions", headers=bearer(settings, "mallory"))).json()
    assert listing["sessions"] == []
    still = await client.get("/api/v1/sessions/owned", headers=bearer(settings, "alice"))
    assert still.status_code == 200
    assert still.json()["title"] is None
    assert still.json()["on_conflict"] is None
