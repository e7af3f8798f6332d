"""What users send, against a real `copilot serve` and the fake upstream: text with NUL or
lone surrogates is stored visibly, and an attachment the model refuses fails only its turn."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, StreamResult, assert_well_formed, serve, stream, upstream_env

# Starts like a PNG (the API's check) but is cut short (what the model cannot read).
TRUNCATED_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` on the test services, pointed at the fake upstream."""
    env = upstream_env(fake.base_url, database_url, redis_url, COPILOT_RETRY_MAX_ATTEMPTS="1")
    with serve(env, tmp_path_factory.mktemp("input")) as server:
        yield server


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client


def send(http: httpx.Client, session_id: str, *parts: dict[str, Any]) -> StreamResult:
    message = {"id": f"u-{uuid.uuid4().hex[:10]}", "role": "user", "parts": list(parts)}
    body = {"id": session_id, "messages": [message], "trigger": "submit-message"}
    return stream(http, "POST", "/api/v1/chat", json=body)


def stored_parts(http: httpx.Client, session_id: str) -> list[list[dict[str, Any]]]:
    response = http.get(f"/api/v1/sessions/{session_id}/messages")
    assert response.status_code == 200
    return [m["parts"] for m in response.json()["messages"]]


def test_nul_and_lone_surrogates_in_message_text_are_stored_visibly_not_500(
    http: httpx.Client,
) -> None:
    sid = f"s-{uuid.uuid4().hex[:12]}"
    message = (
        b'{"id": "u-nul", "role": "user", "parts": [{"type": "text", "text": "a\\u0000b\\ud83dc"}]}'
    )
    body = b'{"id": "' + sid.encode() + b'", "messages": [' + message + b"]}"
    result = stream(
        http, "POST", "/api/v1/chat", content=body, headers={"content-type": "application/json"}
    )
    assert_well_formed(result)
    assert stored_parts(http, sid)[0] == [{"type": "text", "text": "a\ufffdb\ufffdc"}]


def test_an_attachment_the_model_refuses_fails_only_its_turn(
    http: httpx.Client, fake: FakeUpstreamHandle
) -> None:
    sid = f"s-{uuid.uuid4().hex[:12]}"
    image = {
        "type": "file",
        "mediaType": "image/png",
        "filename": "photo.png",
        "url": "data:image/png;base64," + base64.b64encode(TRUNCATED_PNG).decode(),
    }
    refused = send(http, sid, {"type": "text", "text": "what is this?"}, image)
    assert_well_formed(refused)
    assert refused.error is not None
    assert refused.error["code"] == "invalid_request"

    answered = send(http, sid, {"type": "text", "text": "hello again"})
    assert_well_formed(answered)
    assert answered.error is None
    assert answered.text
    sent = [
        r["json"]
        for r in fake.requests("/v1/messages")
        if "hello again" in orjson.dumps(r["json"]).decode()
    ]
    first_user = sent[-1]["messages"][0]["content"]
    assert {"type": "text", "text": "[image photo.png was attached earlier]"} in first_user
    assert not [b for b in first_user if b["type"] == "image"]
