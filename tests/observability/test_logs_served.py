"""What a real `copilot serve` writes to its log at DEBUG, as JSON lines: the ids of the work
on every line it is known for, no secret ever, and message text only when allowed."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from app.api.auth import issue_token
from app.config import AuthSettings
from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, assert_well_formed, serve, stream, turns, upstream_env, wait_until

JWT_SECRET = f"jwt-secret-{secrets.token_hex(12)}"
API_KEY = f"api-key-{secrets.token_hex(12)}"
ANTHROPIC_KEY = f"sk-ant-api03-{secrets.token_hex(12)}"
LANGFUSE_SECRET = f"sk-lf-{secrets.token_hex(12)}"
METRICS_TOKEN = f"metrics-{secrets.token_hex(12)}"
JWT = issue_token(AuthSettings(jwt_secret=SecretStr(JWT_SECRET)), "alice")
SECRETS = (JWT_SECRET, API_KEY, ANTHROPIC_KEY, LANGFUSE_SECRET, METRICS_TOKEN, JWT)


def _env(fake: FakeUpstreamHandle, database_url: str, redis_url: str, **extra: str) -> Any:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        COPILOT_JWT_SECRET=JWT_SECRET,
        COPILOT_API_KEYS=f"svc={API_KEY}",
        COPILOT_METRICS_TOKEN=METRICS_TOKEN,
        LANGFUSE_SECRET_KEY=LANGFUSE_SECRET,
        LANGFUSE_PUBLIC_KEY="pk-lf-public",
        COPILOT_LOG_FORMAT="json",
        COPILOT_LOG_LEVEL="DEBUG",
        **extra,
    )


def _lines(served: Served) -> list[dict[str, Any]]:
    """Every line the server wrote, each a JSON object."""
    return [json.loads(line) for line in served.log().splitlines() if line.strip()]


def _chat(served: Served, headers: dict[str, str], text: str) -> tuple[str, str]:
    """Run a turn; its session id and the request id the server answered with."""
    session_id = f"logs-{uuid.uuid4().hex[:8]}"
    with served.client() as http:
        http.headers.update(headers)
        result = stream(http, "POST", "/api/v1/chat", json={"id": session_id, "message": text})
    assert_well_formed(result)
    return session_id, result.headers["x-request-id"]


def _turn_lines(served: Served, session_id: str) -> list[dict[str, Any]]:
    """The session's turn's DEBUG lines, once its end was logged."""

    def ended() -> list[dict[str, Any]]:
        found = [line for line in _lines(served) if line.get("session_id") == session_id]
        return found if any(" completed: " in line["message"] for line in found) else []

    return list(wait_until(ended))


def test_json_lines_name_their_work_and_hold_no_secret_or_prompt(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    prompt = f"PROMPT-MARKER-{uuid.uuid4().hex}"
    with serve(_env(fake, database_url, redis_url), tmp_path) as served:
        session_id, request_id = _chat(served, {"Authorization": f"Bearer {JWT}"}, prompt)
        keyed, _ = _chat(served, {"X-API-Key": API_KEY}, f"{prompt} again")
        with served.client() as http:
            http.headers["Authorization"] = f"Bearer {JWT}"
            (turn,) = turns(http, session_id)
            assert http.get("/api/v1/sessions/nope", headers={"Authorization": "Bearer x"})
            metrics = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert metrics.status_code == 200
        lines = _turn_lines(served, session_id)
        _turn_lines(served, keyed)
        text = served.log()

    for secret in SECRETS:
        assert secret not in text
    assert prompt not in text
    every = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in every)
    assert any(line["logger"].startswith("uvicorn") for line in every), "uvicorn's lines"
    for line in lines:
        assert line["request_id"] == request_id
        assert line["user_id"] == "alice"
        assert line["turn_id"] == turn["id"]
    started = [line for line in lines if " started: " in line["message"]]
    assert started
    assert started[0]["message"].endswith("characters of message text hidden]")
    keyed_lines = [line for line in every if line.get("session_id") == keyed]
    assert {line["user_id"] for line in keyed_lines} == {"svc"}


def test_with_prompts_logged_message_text_appears_and_secrets_still_do_not(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    prompt = f"PROMPT-MARKER-{uuid.uuid4().hex}"
    pasted = f"sk-ant-api03-pasted{secrets.token_hex(8)}"
    message = f"{prompt} my key is {pasted}, my token {JWT} and {API_KEY}"
    env = _env(fake, database_url, redis_url, COPILOT_LOG_PROMPTS="1")
    with serve(env, tmp_path) as served:
        session_id, _ = _chat(served, {"Authorization": f"Bearer {JWT}"}, message)
        lines = _turn_lines(served, session_id)
        text = served.log()
    assert any(prompt in line["message"] for line in lines)
    for secret in (*SECRETS, pasted):
        assert secret not in text


@pytest.fixture(autouse=True)
def _no_stray_secrets_in_the_test_itself() -> None:
    """The secrets are distinct and long enough to be searched for."""
    assert len(set(SECRETS)) == len(SECRETS)
    assert all(len(secret) >= 8 for secret in SECRETS)
