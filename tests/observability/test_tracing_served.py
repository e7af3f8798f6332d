"""Langfuse traces of turns and feedback scores, from a real `copilot serve` to a stand-in
Langfuse (`app.devtools.langfuse_sink`) that decodes the OTLP protobuf the SDK exports.

One trace per turn, the same shape on both backends, its usage and cost those of the turn
row; feedback stored, shown and scored on the right trace; a Langfuse that is down or hangs
changes nothing for users.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from app.devtools.langfuse_sink import RunningSink, SinkState, running_sink
from app.observability.tracing import feedback_score_id
from tests.serving import (
    Served,
    assert_well_formed,
    finished_turn,
    free_port,
    serve,
    stream,
    upstream_env,
    wait_until,
)

ALICE_KEY = "alice-key-0123456789"
BOB_KEY = "bob-key-0123456789ab"
TOOL = '[[fake:tool name=calculate input={"expression": "6*7"}]]'


def _env(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, **extra: str
) -> dict[str, str]:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_API_KEYS=f"alice={ALICE_KEY},bob={BOB_KEY}",
        COPILOT_RETRY_BASE_DELAY_S="0.05",
        COPILOT_RETRY_MAX_DELAY_S="0.1",
        COPILOT_FLUSH_INTERVAL_S="0.2",
        LANGFUSE_PUBLIC_KEY="pk-lf-test",
        LANGFUSE_SECRET_KEY="sk-lf-test",
        LANGFUSE_FLUSH_INTERVAL_S="0.1",
        LANGFUSE_TIMEOUT_S="1",
        **extra,
    )


@pytest.fixture(scope="module")
def sink() -> Iterator[RunningSink]:
    """The stand-in Langfuse every traced server of this module exports to."""
    with running_sink() as running:
        yield running


@pytest.fixture(scope="module")
def workspaces() -> Iterator[Path]:
    """A short workspace root (the CLI's socket path must fit in 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="ws", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=["anthropic", "claude_sdk"])
def traced(
    request: pytest.FixtureRequest,
    fake: FakeUpstreamHandle,
    sink: RunningSink,
    database_url: str,
    redis_url: str,
    workspaces: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` on each backend, tracing to the sink."""
    env = _env(
        fake,
        database_url,
        redis_url,
        LANGFUSE_BASE_URL=sink.base_url,
        COPILOT_BACKEND=request.param,
        COPILOT_WORKSPACES_DIR=str(workspaces),
    )
    with serve(env, tmp_path_factory.mktemp("traced")) as server:
        server.headers["X-API-Key"] = ALICE_KEY
        yield server


def _chat(served: Served, sid: str, message: str) -> None:
    with served.client() as http:
        result = stream(http, "POST", "/api/v1/chat", json={"id": sid, "message": message})
    assert_well_formed(result)
    assert result.error is None, result.error


def _attr(span: dict[str, Any], key: str) -> Any:
    """A Langfuse attribute, JSON-decoded when it is JSON (usage, cost, metadata values)."""
    value = span["attributes"].get(key)
    if isinstance(value, str) and value[:1] in '{["':
        return json.loads(value)
    return value


def _kind(span: dict[str, Any]) -> str:
    return str(span["attributes"].get("langfuse.observation.type"))


def _trace(sink: RunningSink, trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans, once its root (ended last, with the turn) has arrived."""

    def arrived() -> list[dict[str, Any]] | None:
        spans = sink.state.trace(trace_id)
        return spans if any(s["name"] == "chat-turn" for s in spans) else None

    return list(wait_until(arrived, timeout=15))


def test_a_turn_with_a_retry_and_a_tool_call_is_one_trace_of_the_turn_rows_usage(
    traced: Served, fake: FakeUpstreamHandle, sink: RunningSink
) -> None:
    sid = f"trace-{uuid.uuid4().hex[:8]}"
    fake.enqueue({"kind": "error", "status": 529}, {"kind": "tool", "name": "calculate",
                  "input": {"expression": "6*7"}})  # fmt: skip
    _chat(traced, sid, "what is six times seven?")
    with traced.client() as http:
        turn = finished_turn(http, sid)
    assert turn["status"] == "completed", turn
    trace_id = turn["trace_id"]
    assert isinstance(trace_id, str)
    assert len(trace_id) == 32
    spans = _trace(sink, trace_id)

    (root,) = [s for s in spans if s["parent_span_id"] is None]
    assert root["name"] == "chat-turn"
    assert root["attributes"]["langfuse.trace.name"] == "chat-turn"
    assert set(root["attributes"]["langfuse.trace.tags"]) == {turn["backend"], turn["model"]}
    assert _attr(root, "langfuse.trace.metadata.turn_id") == turn["id"]
    assert _attr(root, "langfuse.trace.metadata.trigger") == "submit-message"
    assert _attr(root, "langfuse.trace.metadata.conflict_policy") == "reject"
    assert _attr(root, "langfuse.trace.metadata.rung") == "1"
    assert _attr(root, "langfuse.trace.metadata.replica")
    for span in spans:  # every observation carries the user and the session
        assert span["attributes"]["user.id"] == "alice", span["name"]
        assert span["attributes"]["session.id"] == sid, span["name"]
        assert span["trace_id"] == trace_id

    (tool,) = [s for s in spans if _kind(s) == "tool"]
    assert tool["name"] == "tool:calculate"
    assert _attr(tool, "langfuse.observation.input") == {"expression": "6*7"}
    assert "42" in str(_attr(tool, "langfuse.observation.output"))
    assert "langfuse.observation.level" not in tool["attributes"]
    assert [s for s in spans if s["name"] == "retry"], [s["name"] for s in spans]

    generations = [s for s in spans if _kind(s) == "generation"]
    assert len(generations) >= 2  # the call that asked for the tool, the one that answered
    usage = {"input": 0, "output": 0, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0}  # fmt: skip
    cost = Decimal(0)
    for generation in generations:
        assert generation["attributes"]["langfuse.observation.model.name"] == turn["model"]
        for key, count in _attr(generation, "langfuse.observation.usage_details").items():
            usage[key] += count
        cost += Decimal(str(_attr(generation, "langfuse.observation.cost_details")["total"]))
    row = turn["usage"]
    assert usage == {
        "input": row["input_tokens"],
        "output": row["output_tokens"],
        "cache_read_input_tokens": row["cache_read_tokens"],
        "cache_creation_input_tokens": row["cache_write_tokens"],
    }
    assert row["output_tokens"] > 0
    assert abs(cost - Decimal(str(row["cost_usd"]))) <= Decimal("0.000001")


def _usage_of(spans: list[dict[str, Any]]) -> tuple[dict[str, int], Decimal]:
    usage = {"input": 0, "output": 0, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0}  # fmt: skip
    cost = Decimal(0)
    for span in spans:
        if _kind(span) != "generation":
            continue
        for key, count in _attr(span, "langfuse.observation.usage_details").items():
            usage[key] += count
        cost += Decimal(str(_attr(span, "langfuse.observation.cost_details").get("total", 0)))
    return usage, cost


def test_a_stopped_turn_bills_its_trace_what_its_row_bills(
    traced: Served, sink: RunningSink
) -> None:
    sid = f"stopped-{uuid.uuid4().hex[:8]}"
    body = {"id": sid, "message": "[[fake:text tokens=400 rate=40]]"}
    with traced.client() as http, traced.client() as control:
        with http.stream("POST", "/api/v1/chat", json=body) as response:
            stopped = False
            for line in response.iter_lines():  # read to the end: the stopped turn ends it
                if not stopped and '"text-delta"' in line:
                    assert control.post(f"/api/v1/chat/{sid}/stop").status_code == 202
                    stopped = True
            assert stopped
        turn = finished_turn(control, sid, timeout=30)
    assert turn["status"] == "stopped", turn
    usage, cost = _usage_of(_trace(sink, turn["trace_id"]))
    row = turn["usage"]
    assert usage == {
        "input": row["input_tokens"],
        "output": row["output_tokens"],
        "cache_read_input_tokens": row["cache_read_tokens"],
        "cache_creation_input_tokens": row["cache_write_tokens"],
    }
    assert 0 < row["output_tokens"] < 400  # cut short: the output is (partly) estimated
    assert abs(cost - Decimal(str(row["cost_usd"]))) <= Decimal("0.000001")


def _reply_id(http: httpx.Client, sid: str) -> tuple[str, str]:
    messages = http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
    user = next(m["id"] for m in messages if m["role"] == "user")
    reply = next(m["id"] for m in messages if m["role"] == "assistant")
    return user, reply


def _feedback_of(http: httpx.Client, sid: str, message_id: str) -> Any:
    messages = http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"]
    return next(m for m in messages if m["id"] == message_id)["metadata"].get("feedback")


def test_feedback_is_stored_shown_replaced_and_scored_on_the_turns_trace(
    traced: Served, sink: RunningSink
) -> None:
    sid = f"feedback-{uuid.uuid4().hex[:8]}"
    _chat(traced, sid, "rate me")
    with traced.client() as http:
        trace_id = finished_turn(http, sid)["trace_id"]
        _, reply = _reply_id(http, sid)
        path = f"/api/v1/sessions/{sid}/messages/{reply}/feedback"

        put = http.put(path, json={"rating": "down", "comment": "not what I asked"})
        assert put.status_code == 200, put.text
        assert put.json()["rating"] == "down"
        assert _feedback_of(http, sid, reply) == {"rating": "down", "comment": "not what I asked"}
        score_id = feedback_score_id(trace_id, reply)

        def scored(value: float) -> dict[str, Any] | None:
            with sink.state.lock:
                found = [s for s in sink.state.scores if s["id"] == score_id]
            return found[-1] if found and found[-1]["value"] == value else None

        down = wait_until(lambda: scored(0.0), timeout=10)
        assert down["traceId"] == trace_id
        assert down["name"] == "user-feedback"
        assert down["dataType"] == "BOOLEAN"
        assert down["comment"] == "not what I asked"

        assert http.put(path, json={"rating": "up"}).status_code == 200
        assert _feedback_of(http, sid, reply) == {"rating": "up"}
        assert wait_until(lambda: scored(1.0), timeout=10)["traceId"] == trace_id

        assert http.delete(path).status_code == 204
        assert _feedback_of(http, sid, reply) is None
        wait_until(lambda: score_id in sink.state.deleted_scores, timeout=10)
        assert http.delete(path).status_code == 204  # nothing to take back: the same answer


def test_feedback_refuses_what_cannot_be_rated(traced: Served) -> None:
    sid = f"refuse-{uuid.uuid4().hex[:8]}"
    _chat(traced, sid, "hello")
    with traced.client() as http:
        finished_turn(http, sid)
        user, reply = _reply_id(http, sid)
        base = f"/api/v1/sessions/{sid}/messages"

        other = http.put(
            f"{base}/{reply}/feedback", json={"rating": "up"}, headers={"X-API-Key": BOB_KEY}
        )
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "session_not_found"
        unknown_session = http.put(
            f"/api/v1/sessions/nope-{sid}/messages/{reply}/feedback", json={"rating": "up"}
        )
        assert unknown_session.status_code == 404  # someone else's is as unknown as none
        assert unknown_session.json()["error"]["code"] == "session_not_found"
        taken = http.delete(f"{base}/{reply}/feedback", headers={"X-API-Key": BOB_KEY})
        assert taken.status_code == 404

        mine = http.put(f"{base}/{user}/feedback", json={"rating": "up"})
        assert mine.status_code == 422
        assert mine.json()["error"]["code"] == "not_an_assistant_message"
        missing = http.put(f"{base}/msg-unknown/feedback", json={"rating": "up"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "message_not_found"

        bodies = [
            {"rating": "meh"},
            {},
            {"rating": "up", "stars": 5},
            {"rating": "up", "comment": 3},
        ]
        for body in bodies:
            bad = http.put(f"{base}/{reply}/feedback", json=body)
            assert bad.status_code == 422, body
            assert bad.json()["error"]["code"] == "validation_error", bad.json()
        json_type = {"content-type": "application/json"}
        broken = http.put(f"{base}/{reply}/feedback", content=b'{"rating": ', headers=json_type)
        assert broken.status_code == 422
        assert broken.json()["error"]["code"] == "invalid_json"
        assert _feedback_of(http, sid, reply) is None  # nothing refused was stored


@pytest.fixture
def unreachable(request: pytest.FixtureRequest) -> Iterator[str]:
    """The address of a Langfuse that is down (nothing listens) or hangs (never answers)."""
    if request.param == "down":
        yield f"http://127.0.0.1:{free_port()}"
        return
    with running_sink(SinkState(mode="hang", hang_s=60)) as hanging:
        yield hanging.base_url


def _exported_failures(served: Served) -> float:
    text = httpx.get(served.base_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("copilot_tracer_export_failures_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("unreachable", ["down", "hang"], indirect=True)
def test_turns_finish_on_time_and_the_server_stops_in_time_when_langfuse_is_unreachable(
    unreachable: str,
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    env = _env(fake, database_url, redis_url, LANGFUSE_BASE_URL=unreachable)
    with serve(env, tmp_path) as served:
        served.headers["X-API-Key"] = ALICE_KEY
        for i in range(3):
            began = time.monotonic()
            _chat(served, f"down-{uuid.uuid4().hex[:8]}", f"{TOOL} turn {i}")
            assert time.monotonic() - began < 3.0  # instant upstream: well under a second
        wait_until(lambda: _exported_failures(served) >= 1, timeout=15)
        began = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(20)
        # The final flush waits at most LANGFUSE_TIMEOUT_S (1 s) plus a second.
        assert time.monotonic() - began < 8.0, served.log()
    assert "Traceback" not in served.log()
