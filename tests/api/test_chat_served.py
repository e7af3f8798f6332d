"""Chat turns over HTTP against a real `copilot serve` process and the fake upstream.

One server and one fake upstream serve the whole module; each test uses its own session.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

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

MAX_CHARS = 2000


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` on the test services, pointed at the fake upstream."""
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_HEARTBEAT_S="0.2",
        COPILOT_FLUSH_INTERVAL_S="0.2",
        COPILOT_RETRY_MAX_ATTEMPTS="3",
        COPILOT_RETRY_BASE_DELAY_S="0.01",
        COPILOT_RETRY_MAX_DELAY_S="0.05",
        COPILOT_MAX_TOOL_ROUNDS="2",
        COPILOT_MAX_MESSAGE_CHARS=str(MAX_CHARS),
        COPILOT_TITLE_GENERATION="1",
    )
    with serve(env, tmp_path_factory.mktemp("served")) as server:
        yield server


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client


def new_session() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def ui_message(text: str, message_id: str | None = None) -> dict[str, Any]:
    return {
        "id": message_id or f"u-{uuid.uuid4().hex[:10]}",
        "role": "user",
        "parts": [{"type": "text", "text": text}],
    }


def chat(http: httpx.Client, session_id: str, text: str, **extra: Any) -> StreamResult:
    body = {"id": session_id, "messages": [ui_message(text)], "trigger": "submit-message", **extra}
    return stream(http, "POST", "/api/v1/chat", json=body)


def messages(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/api/v1/sessions/{session_id}/messages")
    assert response.status_code == 200
    return list(response.json()["messages"])


def read_until(lines: Iterator[str], marker: str) -> None:
    """Consume stream lines up to the first one containing `marker`."""
    for line in lines:
        if marker in line:
            return
    raise AssertionError(f"stream ended before {marker}")


# -- streaming ---------------------------------------------------------------------------------


def test_a_text_reply_streams_and_is_stored(http: httpx.Client) -> None:
    sid = new_session()
    result = chat(http, sid, "[[fake:text tokens=40 rate=2000]]")
    assert_well_formed(result)
    assert len(result.text.split()) == 40
    finish = result.chunks[-1]
    assert finish["finishReason"] == "stop"
    usage = finish["messageMetadata"]["usage"]
    assert usage["outputTokens"] == 40
    assert finish["messageMetadata"]["costUsd"] > 0
    stored = messages(http, sid)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["id"] == result.chunks[0]["messageId"]
    texts = [p["text"] for p in stored[1]["parts"] if p["type"] == "text"]
    assert texts == [result.text]
    turn = turns(http, sid)[0]
    assert turn["status"] == "completed"
    assert turn["usage"]["output_tokens"] == 40
    assert turn["ttft_ms"] is not None
    assert turn["duration_ms"] >= turn["ttft_ms"]
    assert float(turn["usage"]["cost_usd"]) == pytest.approx(finish["messageMetadata"]["costUsd"])
    session = http.get(f"/api/v1/sessions/{sid}").json()
    assert session["status"] == "idle"
    assert session["usage"]["output_tokens"] == 40


def test_the_plain_text_body_form_works(http: httpx.Client) -> None:
    sid = new_session()
    result = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": "hi there"})
    assert_well_formed(result)
    assert "hi there" in result.text


def test_thinking_streams_as_reasoning_and_keeps_its_signature(http: httpx.Client) -> None:
    sid = new_session()
    result = chat(http, sid, "[[fake:thinking tokens=10]]")
    assert_well_formed(result)
    assert result.of("reasoning-delta")
    end = result.of("reasoning-end")[0]
    assert end["providerMetadata"]["anthropic"]["signature"]
    stored = messages(http, sid)[1]["parts"]
    reasoning = [p for p in stored if p["type"] == "reasoning"]
    assert reasoning
    assert reasoning[0]["text"]


def test_a_tool_call_streams_input_and_output_then_text(http: httpx.Client) -> None:
    sid = new_session()
    result = chat(http, sid, '[[fake:tool name=calculate input={"expression": "6*7"}]]')
    assert_well_formed(result)
    kinds = [c["type"] for c in result.chunks]
    assert kinds.index("tool-input-start") < kinds.index("tool-input-available")
    assert kinds.index("tool-input-available") < kinds.index("tool-output-available")
    assert result.of("tool-output-available")[0]["output"]["result"] == 42
    assert "42" in result.text
    parts = messages(http, sid)[1]["parts"]
    tool = next(p for p in parts if p["type"] == "tool-calculate")
    assert tool["state"] == "output-available"
    assert tool["input"] == {"expression": "6*7"}


def test_a_failing_tool_streams_tool_output_error(http: httpx.Client) -> None:
    sid = new_session()
    result = chat(http, sid, '[[fake:tool name=calculate input={"expression": "1/0"}]]')
    assert_well_formed(result)
    assert "division by zero" in result.of("tool-output-error")[0]["errorText"]


def test_the_second_turn_sends_the_history_with_tool_calls(
    http: httpx.Client, fake: FakeUpstreamHandle
) -> None:
    sid = new_session()
    chat(http, sid, '[[fake:tool name=calculate input={"expression": "2+2"}]]')
    marker = f"second-{uuid.uuid4().hex[:6]}"
    result = chat(http, sid, marker)
    assert_well_formed(result)
    request = next(
        r
        for r in reversed(fake.requests("/v1/messages"))
        if marker in str(r["json"]["messages"][-1])
    )
    sent = request["json"]["messages"]
    roles = [m["role"] for m in sent]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert sent[1]["content"][0]["type"] == "tool_use"
    assert sent[2]["content"][0]["type"] == "tool_result"
    assert request["json"]["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert request["json"]["tools"][-1]["cache_control"] == {"type": "ephemeral"}


# -- idempotency and regenerate -----------------------------------------------------------------


def test_a_retried_post_with_the_same_message_id_does_not_duplicate_it(http: httpx.Client) -> None:
    sid = new_session()
    message = ui_message("only once", "fixed-id")
    body = {"id": sid, "messages": [message], "trigger": "submit-message"}
    first = stream(http, "POST", "/api/v1/chat", json=body)
    second = stream(http, "POST", "/api/v1/chat", json=body)
    assert_well_formed(first)
    assert_well_formed(second)
    stored = messages(http, sid)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["id"] == "fixed-id"
    assert stored[1]["id"] == second.chunks[0]["messageId"]


def test_regenerate_replaces_the_last_assistant_reply(http: httpx.Client) -> None:
    sid = new_session()
    user = ui_message("[[fake:text tokens=5]]")
    first = stream(
        http,
        "POST",
        "/api/v1/chat",
        json={"id": sid, "messages": [user], "trigger": "submit-message"},
    )
    old_id = first.chunks[0]["messageId"]
    again = stream(
        http,
        "POST",
        "/api/v1/chat",
        json={
            "id": sid,
            "messages": [user],
            "trigger": "regenerate-message",
            "messageId": old_id,
        },
    )
    assert_well_formed(again)
    stored = messages(http, sid)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["id"] == again.chunks[0]["messageId"] != old_id
    assert [t["trigger"] for t in turns(http, sid)] == ["submit-message", "regenerate-message"]


def test_regenerating_an_older_message_is_409(http: httpx.Client) -> None:
    sid = new_session()
    first = chat(http, sid, "one")
    chat(http, sid, "two")
    response = http.post(
        "/api/v1/chat",
        json={
            "id": sid,
            "messages": [ui_message("x")],
            "trigger": "regenerate-message",
            "messageId": first.chunks[0]["messageId"],
        },
    )
    assert response.status_code == 409


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "code", "retryable"),
    [
        ("[[fake:error status=400]]", "invalid_request", False),
        ("[[fake:error status=401]]", "auth_failed", False),
        ("[[fake:error status=403]]", "auth_failed", False),
        ("[[fake:error status=404]]", "invalid_request", False),
        ("[[fake:error status=413]]", "context_exhausted", False),
        ("[[fake:error status=429 retry_after=0.01]]", "rate_limited", True),
        ("[[fake:error status=500]]", "upstream_unavailable", True),
        ("[[fake:error status=529]]", "overloaded", True),
        ("[[fake:echo context=10]] " + "long " * 50, "context_exhausted", False),
        ("[[fake:error status=529 after=2]]", "overloaded", True),
    ],
)
def test_each_upstream_error_ends_the_turn_with_its_code(
    http: httpx.Client, directive: str, code: str, retryable: bool
) -> None:
    sid = new_session()
    result = chat(http, sid, directive)
    assert_well_formed(result)
    assert result.error is not None
    assert result.error["code"] == code
    assert result.error["retryable"] is retryable
    assert result.of("error")[0]["errorText"].startswith(code)
    assert result.chunks[-1]["finishReason"] == "error"
    turn = turns(http, sid)[0]
    assert turn["status"] == "failed"
    assert turn["error_code"] == code
    assert turn["attempts"] == (3 if retryable else 1)
    stored = messages(http, sid)[1]
    assert stored["parts"][-1]["type"] == "data-error"
    assert stored["parts"][-1]["data"]["code"] == code


def test_rate_limited_reports_when_to_retry(http: httpx.Client) -> None:
    result = chat(http, new_session(), "[[fake:error status=429 retry_after=0.02]]")
    assert result.error is not None
    assert result.error["retry_after_s"] == pytest.approx(0.02, abs=0.01)


def test_transient_errors_before_output_are_retried(http: httpx.Client) -> None:
    sid = new_session()
    result = chat(http, sid, f"[[fake:error status=529 times=2]] {uuid.uuid4().hex}")
    assert_well_formed(result)
    assert result.error is None
    statuses = result.of("data-status")
    assert [s["data"]["status"] for s in statuses] == ["retrying", "retrying"]
    assert all(s["transient"] is True for s in statuses)
    assert result.text
    turn = turns(http, sid)[0]
    assert turn["status"] == "completed"
    assert turn["attempts"] == 3
    assert [a["error_code"] for a in turn["attempt_log"]] == ["overloaded", "overloaded", None]
    stored = messages(http, sid)[1]["parts"]
    assert not [p for p in stored if p["type"] == "data-status"]


def test_a_drop_after_visible_output_ends_with_a_retryable_error_and_keeps_the_partial(
    http: httpx.Client,
) -> None:
    sid = new_session()
    result = chat(http, sid, "[[fake:text tokens=400 rate=4000 drop_after=12]]")
    assert_well_formed(result)
    assert result.text
    assert result.error is not None
    assert result.error["code"] == "upstream_unavailable"
    assert result.error["retryable"] is True
    assert not result.of("data-status"), "output was visible: no retry allowed"
    stored = messages(http, sid)[1]
    texts = [p["text"] for p in stored["parts"] if p["type"] == "text"]
    assert texts == [result.text]
    assert stored["parts"][-1]["type"] == "data-error"
    assert turns(http, sid)[0]["attempts"] == 1


def test_a_mid_stream_error_event_after_visible_output_is_retryable_and_not_retried(
    http: httpx.Client,
) -> None:
    sid = new_session()
    result = chat(http, sid, "[[fake:error status=500 after=6 tokens=50]]")
    assert_well_formed(result)
    assert result.text
    assert result.error is not None
    assert result.error["code"] == "upstream_unavailable"
    assert result.error["retryable"] is True
    assert turns(http, sid)[0]["attempts"] == 1


def test_max_tokens_finishes_with_length(http: httpx.Client) -> None:
    result = chat(http, new_session(), "[[fake:text tokens=5000 rate=100000]]")
    assert_well_formed(result)
    assert result.chunks[-1]["finishReason"] == "length"


def test_the_tool_loop_stops_at_max_tool_rounds(
    http: httpx.Client, fake: FakeUpstreamHandle
) -> None:
    sid = new_session()
    plan = {"kind": "tool", "name": "get_current_time", "input": {}}
    fake.enqueue(plan, plan, plan, plan)
    try:
        result = chat(http, sid, "loop forever")
    finally:
        fake.reset()
    assert_well_formed(result)
    assert result.error is not None
    assert result.error["code"] == "tool_loop_limit"
    assert len(result.of("tool-output-available")) == 2


# -- heartbeats, conflicts, stop, resume ---------------------------------------------------------


def test_heartbeats_are_comments_while_the_upstream_is_silent(http: httpx.Client) -> None:
    result = chat(http, new_session(), "[[fake:text tokens=3 delay=1.0]]")
    assert_well_formed(result)
    assert result.comments >= 3
    assert b"data: ping" not in result.body


@contextlib.contextmanager
def running_turn(served: Served, sid: str, text: str, **extra: Any) -> Iterator[Iterator[str]]:
    """A turn streaming on its own connection, read up to its first text delta."""
    body = {"id": sid, "messages": [ui_message(text)], **extra}
    with served.client() as other, other.stream("POST", "/api/v1/chat", json=body) as running:
        assert running.status_code == 200
        lines = running.iter_lines()
        read_until(lines, '"text-delta"')
        yield lines


def test_a_second_turn_while_one_runs_is_409(http: httpx.Client, served: Served) -> None:
    sid = new_session()
    with running_turn(served, sid, "[[fake:text tokens=100 rate=50]]"):
        response = http.post("/api/v1/chat", json={"id": sid, "messages": [ui_message("x")]})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "turn_in_progress"
        assert http.get(f"/api/v1/sessions/{sid}").json()["status"] == "running"


def test_stop_ends_the_turn_and_keeps_what_was_said(http: httpx.Client, served: Served) -> None:
    sid = new_session()
    with running_turn(served, sid, "[[fake:text tokens=500 rate=50]]") as lines:
        assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 202
        rest = "\n".join(lines)
    assert '"finishReason":"other"' in rest
    assert finished_turn(http, sid)["status"] == "stopped"
    stored = messages(http, sid)[1]
    assert any(p["type"] == "text" and p["text"] for p in stored["parts"])
    assert http.post(f"/api/v1/chat/{sid}/stop").status_code == 204


def test_a_client_disconnect_does_not_end_the_turn(http: httpx.Client, served: Served) -> None:
    sid = new_session()
    with running_turn(served, sid, "[[fake:text tokens=30 rate=60]]"):
        pass
    turn = finished_turn(http, sid)
    assert turn["status"] == "completed"
    assert turn["usage"]["output_tokens"] == 30


def test_on_disconnect_cancel_stops_the_turn(http: httpx.Client, served: Served) -> None:
    sid = new_session()
    with running_turn(served, sid, "[[fake:text tokens=300 rate=50]]", on_disconnect="cancel"):
        pass
    assert finished_turn(http, sid)["status"] == "stopped"


def test_resume_replays_the_running_turn_from_start(http: httpx.Client, served: Served) -> None:
    sid = new_session()
    assert http.get(f"/api/v1/chat/{sid}/stream").status_code == 204, "unknown session"
    with running_turn(served, sid, "[[fake:text tokens=60 rate=120]]"):
        resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
    assert_well_formed(resumed)
    assert len(resumed.text.split()) == 60
    assert http.get(f"/api/v1/chat/{sid}/stream").status_code == 204


def test_resume_after_last_event_id_skips_what_was_seen(http: httpx.Client, served: Served) -> None:
    sid = new_session()
    with running_turn(served, sid, "[[fake:text tokens=40 rate=100]]"):
        resumed = stream(http, "GET", f"/api/v1/chat/{sid}/stream", headers={"Last-Event-ID": "2"})
    assert resumed.status == 200, (resumed.status, resumed.body)
    assert resumed.ids[0] == 3
    assert resumed.chunks[-1]["type"] == "finish"


def test_a_title_is_generated_after_the_first_message(http: httpx.Client) -> None:
    sid = new_session()
    chat(http, sid, "plan a trip to Lisbon")
    title = wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["title"], 10)
    assert "Lisbon" in title


def test_the_title_is_asked_for_only_once_the_first_turn_has_shown_something(
    http: httpx.Client, fake: FakeUpstreamHandle
) -> None:
    # A title request at the turn's start competed with the first token of every new chat
    # of a burst: it waits for the turn's first visible output now.
    sid = new_session()
    chat(http, sid, "a trip to Porto [[fake:text tokens=5 rate=50 delay=1]]")
    wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json()["title"], 10)
    calls = [r for r in fake.requests("/v1/messages") if "Porto" in str(r["json"]["messages"])]
    [turn] = [r for r in calls if "You name conversations" not in str(r["json"].get("system"))]
    [title] = [r for r in calls if "You name conversations" in str(r["json"].get("system"))]
    assert title["time"] >= turn["time"] + 1.0  # after the reply's delayed first token


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"id": "bad-1", "message": ""}, 422),
        ({"id": "bad-2", "message": "   \n "}, 422),
        ({"id": "bad-3", "message": "x" * (MAX_CHARS + 1)}, 413),
        ({"id": "bad-4", "message": "hi", "trigger": "resubmit"}, 422),
        ({"id": "bad-5", "messages": [{"id": "m", "role": "user", "parts": [{"text": "x"}]}]}, 422),
        (
            {"id": "bad-6", "messages": [{"id": "m", "role": "user", "parts": [{"type": "text"}]}]},
            422,
        ),
        ({"id": "bad-7", "messages": [{"id": "m", "role": "user", "parts": "text"}]}, 422),
        (
            {
                "id": "bad-8",
                "messages": [
                    {"id": "m", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]}
                ],
            },
            422,
        ),
        ({"id": "bad 9", "message": "hi"}, 422),
        ({"message": "hi"}, 422),
        ({"id": "bad-10"}, 422),
        ({"id": "bad-11", "message": "hi", "on_conflict": "whatever"}, 422),
    ],
    ids=[
        "empty",
        "whitespace",
        "too-long",
        "unknown-trigger",
        "part-without-type",
        "text-part-without-text",
        "parts-not-a-list",
        "last-not-user",
        "bad-id",
        "no-id",
        "no-message",
        "bad-on-conflict",
    ],
)
def test_bad_chat_input_is_rejected_before_anything_is_stored(
    http: httpx.Client, body: dict[str, Any], status: int
) -> None:
    response = http.post("/api/v1/chat", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
    if isinstance(body.get("id"), str) and " " not in body["id"]:
        assert http.get(f"/api/v1/sessions/{body['id']}").status_code == 404


def test_someone_elses_session_is_404(served: Served, http: httpx.Client) -> None:
    # Local mode has one user; the JWT-protected variant is covered by tests/api/test_auth.py.
    response = http.get("/api/v1/sessions/never-created/turns")
    assert response.status_code == 404
