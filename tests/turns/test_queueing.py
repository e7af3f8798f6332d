"""Messages sent while a turn runs, on two replicas: queued in order, steering, never lost or
answered twice (on_conflict enqueue, steer, reject, interrupt)."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import (
    Served,
    StreamResult,
    assert_well_formed,
    serve,
    sql_rows,
    stream,
    turns,
    upstream_env,
    wait_until,
)

PREFIX = f"dt-{uuid.uuid4().hex[:8]}"


def _env(fake: FakeUpstreamHandle, database_url: str, redis_url: str, name: str) -> dict[str, str]:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_REDIS_KEY_PREFIX=PREFIX,
        COPILOT_REPLICA_ID=name,
        COPILOT_HEARTBEAT_S="0.5",
        COPILOT_FLUSH_INTERVAL_S="0.2",
        COPILOT_LEASE_TTL_S="1",
        COPILOT_REAP_INTERVAL_S="0.5",
        COPILOT_MAX_QUEUED="25",
    )


@pytest.fixture(scope="module")
def replicas(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Served, Served]]:
    with (
        serve(_env(fake, database_url, redis_url, "a"), tmp_path_factory.mktemp("a")) as a,
        serve(_env(fake, database_url, redis_url, "b"), tmp_path_factory.mktemp("b")) as b,
    ):
        yield a, b


def _own_turn(result: StreamResult) -> StreamResult:
    """The stream without the transient statuses of its wait (queued, steering)."""
    return dataclasses.replace(result, chunks=[c for c in result.chunks if not c.get("transient")])


def _statuses(result: StreamResult) -> list[str]:
    return [c["data"]["status"] for c in result.chunks if c["type"] == "data-status"]


def _post(served: Served, sid: str, text: str, policy: str | None, **body: Any) -> StreamResult:
    payload = {"id": sid, "message": text, **body}
    if policy is not None:
        payload["on_conflict"] = policy
    with served.client() as http:
        return stream(http, "POST", "/api/v1/chat", json=payload)


def _history(served: Served, sid: str) -> list[dict[str, Any]]:
    with served.client() as http:
        return list(http.get(f"/api/v1/sessions/{sid}/messages").json()["messages"])


def _text(message: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in message["parts"] if p["type"] == "text")


def _number(message: dict[str, Any]) -> int:
    """i of a user message `[[fake:text text="reply to m<i>" ...]]`."""
    return int(_text(message).split("m")[-1].split('"')[0])


def _one_at_a_time(served: Served, sid: str) -> list[dict[str, Any]]:
    """The session's turns, checked never to have overlapped."""
    with served.client() as http:
        done = turns(http, sid)
    spans = sorted(
        (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"]))
        for t in done
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, "two turns of one session overlapped"
    return done


def _burst(
    replicas: tuple[Served, Served], sid: str, policy: str, count: int = 20
) -> dict[int, StreamResult]:
    """`count` messages sent at once to one session, alternately through both replicas."""
    results: dict[int, StreamResult] = {}
    gate = threading.Barrier(count)

    def send(i: int) -> None:
        gate.wait()
        results[i] = _post(
            replicas[i % 2], sid, f'[[fake:text text="reply to m{i}" rate=40]]', policy
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == count
    return results


def _settled(served: Served, sid: str) -> None:
    with served.client() as http:
        wait_until(
            lambda: (
                http.get(f"/api/v1/sessions/{sid}").json()["status"] == "idle"
                and all(t["status"] != "running" for t in turns(http, sid))
            ),
            timeout=60,
        )


def test_twenty_messages_enqueued_at_once_are_answered_one_at_a_time_in_order(
    replicas: tuple[Served, Served],
) -> None:
    sid = f"enq-{uuid.uuid4().hex[:8]}"
    results = _burst(replicas, sid, "enqueue")
    for i, result in results.items():
        own = _own_turn(result)
        assert_well_formed(own)
        assert own.text == f"reply to m{i}", "each stream carries the answer to its own message"
        assert own.chunks[-1]["finishReason"] == "stop"
    queued = [r for r in results.values() if "queued" in _statuses(r)]
    assert len(queued) >= 10, "most of them waited in the queue"
    _settled(replicas[0], sid)
    history = _history(replicas[1], sid)
    assert [m["role"] for m in history] == ["user", "assistant"] * 20
    asked = [str(_number(history[k])) for k in range(0, 40, 2)]
    answered = [_text(history[k]).removeprefix("reply to m") for k in range(1, 40, 2)]
    assert answered == asked, "every reply follows its own message"
    assert sorted(asked, key=int) == [str(i) for i in range(20)], "every message stored once"
    assert [t["status"] for t in _one_at_a_time(replicas[0], sid)] == ["completed"] * 20


@pytest.mark.parametrize("policy", ["reject", "interrupt"])
def test_twenty_messages_at_once_that_may_be_refused_never_overlap_nor_lose_an_accepted_one(
    replicas: tuple[Served, Served], policy: str
) -> None:
    # reject: the session is busy; interrupt: another interrupting message won the session.
    sid = f"{policy[:3]}-{uuid.uuid4().hex[:8]}"
    results = _burst(replicas, sid, policy)
    accepted = {i for i, r in results.items() if r.status == 200}
    assert accepted
    for i, result in results.items():
        if i in accepted:
            assert_well_formed(result)
        else:
            assert result.status == 409
            assert b"turn_in_progress" in result.body
    _settled(replicas[0], sid)
    history = _history(replicas[0], sid)
    users = [m for m in history if m["role"] == "user"]
    asked = sorted(_number(m) for m in users)
    assert asked == sorted(accepted), "exactly the accepted messages are stored, once"
    assert [m["role"] for m in history] == ["user", "assistant"] * len(users)
    _one_at_a_time(replicas[0], sid)


def test_twenty_messages_at_once_with_steer_are_each_stored_once_and_answered_once(
    replicas: tuple[Served, Served],
) -> None:
    sid = f"str-{uuid.uuid4().hex[:8]}"
    results = _burst(replicas, sid, "steer")
    assert all(r.status == 200 for r in results.values())
    _settled(replicas[0], sid)
    history = _history(replicas[0], sid)
    as_turns = [_number(m) for m in history if m["role"] == "user"]
    steered = [
        _number({"parts": [{"type": "text", "text": p["data"]["text"]}]})
        for m in history
        if m["role"] == "assistant"
        for p in m["parts"]
        if p["type"] == "data-steer"
    ]
    assert sorted(as_turns + steered) == list(range(20)), "each message stored exactly once"
    for i, result in results.items():
        if i in steered:
            assert _statuses(result)[-1] == "steered"
        else:
            own = _own_turn(result)
            assert_well_formed(own)
            assert own.text == f"reply to m{i}"
    _one_at_a_time(replicas[0], sid)


def test_a_steer_during_a_tool_call_reaches_the_next_model_call_and_is_shown_in_place(
    fake: FakeUpstreamHandle, replicas: tuple[Served, Served]
) -> None:
    a, b = replicas
    sid = f"tool-{uuid.uuid4().hex[:8]}"
    first: dict[str, StreamResult] = {}
    slow_tool = (
        '[[fake:tool name=calculate input={"expression": "6*7"} '
        'text="let me work this out step by step before calling the tool" rate=8]]'
    )
    thread = threading.Thread(target=lambda: first.update(r=_post(a, sid, slow_tool, None)))
    thread.start()
    with b.client() as http:
        wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json().get("status") == "running")
    steer = _post(b, sid, "no wait, use the other file", "steer")
    thread.join(60)
    running = first["r"]
    assert_well_formed(running)
    assert _statuses(steer) == ["steering", "steered"]
    # The running stream acknowledges it, between the tool's step and the next.
    kinds = [c["type"] for c in running.chunks]
    acknowledged = running.of("data-steer")
    assert [c["data"]["text"] for c in acknowledged] == ["no wait, use the other file"]
    at = kinds.index("data-steer")
    assert "tool-output-available" in kinds[:at]
    assert "text-delta" in kinds[at:]
    # The model's next call got it, after the tool's result.
    calls = [r["json"] for r in fake.requests("/v1/messages")]
    last_user = calls[-1]["messages"][-1]
    assert last_user["role"] == "user"
    assert [block["type"] for block in last_user["content"]] == ["tool_result", "text"]
    assert last_user["content"][-1]["text"] == "no wait, use the other file"
    # Stored in place, once: the history holds it inside the reply, not as a turn of its own.
    history = _history(a, sid)
    assert [m["role"] for m in history] == ["user", "assistant"]
    parts = [p["type"] for p in history[1]["parts"]]
    assert parts.count("data-steer") == 1
    assert parts.index("tool-calculate") < parts.index("data-steer") < len(parts) - 1


def test_a_steer_that_comes_too_late_becomes_the_next_turn(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    sid = f"late-{uuid.uuid4().hex[:8]}"
    first: dict[str, StreamResult] = {}
    plain = "[[fake:text tokens=30 rate=30]]"  # no tool call: no point to join at
    thread = threading.Thread(target=lambda: first.update(r=_post(a, sid, plain, None)))
    thread.start()
    with b.client() as http:
        wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json().get("status") == "running")
    late = _post(b, sid, '[[fake:text text="the late answer" rate=40]]', "steer")
    thread.join(60)
    assert_well_formed(first["r"])
    assert not first["r"].of("data-steer")
    assert _statuses(late)[0] == "steering"
    own = _own_turn(late)
    assert_well_formed(own)
    assert own.text == "the late answer"
    history = _history(a, sid)
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert _text(history[3]) == "the late answer"


def test_a_replica_killed_with_three_queued_messages_leaves_them_to_another_in_order(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    replicas: tuple[Served, Served],
) -> None:
    _, b = replicas
    sid = f"kq-{uuid.uuid4().hex[:8]}"
    with serve(_env(fake, database_url, redis_url, "doomed"), tmp_path) as doomed:
        long_turn = threading.Thread(
            target=lambda: _safe_post(doomed, sid, "[[fake:text tokens=400 rate=40]]", None)
        )
        long_turn.start()
        with b.client() as http:
            wait_until(
                lambda: http.get(f"/api/v1/sessions/{sid}").json().get("status") == "running"
            )
        waiting: list[threading.Thread] = []
        for i in range(3):  # queued through the doomed replica: their clients die with it
            thread = threading.Thread(
                target=_safe_post,
                args=(doomed, sid, f'[[fake:text text="answer {i}" rate=40]]', "enqueue"),
            )
            thread.start()
            waiting.append(thread)
            wait_until(lambda n=i + 1: _waiting(database_url, sid) == n)
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
    for thread in [long_turn, *waiting]:
        thread.join(30)
    with b.client() as http:
        wait_until(
            lambda: len([t for t in turns(http, sid) if t["status"] == "completed"]) == 3,
            timeout=30,
        )
    _settled(b, sid)
    history = _history(b, sid)
    assert [_text(m) for m in history if m["role"] == "assistant"][1:] == [
        "answer 0",
        "answer 1",
        "answer 2",
    ]
    statuses = [t["status"] for t in _one_at_a_time(b, sid)]
    assert statuses == ["interrupted", "completed", "completed", "completed"]


def _waiting(database_url: str, sid: str) -> int:
    """Messages of the session waiting in its queue, as stored."""
    [(count,)] = sql_rows(
        database_url,
        "SELECT count(*) FROM queued_messages WHERE session_id = :s AND status = 'queued'",
        s=sid,
    )
    return int(count)


def _safe_post(served: Served, sid: str, text: str, policy: str | None) -> None:
    """A POST whose server may die under it."""
    with contextlib.suppress(httpx.HTTPError):
        _post(served, sid, text, policy)


def test_a_message_queued_on_an_idle_session_runs_at_once(replicas: tuple[Served, Served]) -> None:
    a, _ = replicas
    sid = f"idle-{uuid.uuid4().hex[:8]}"
    result = _post(a, sid, '[[fake:text text="straight away" rate=100]]', "enqueue")
    assert_well_formed(result)
    assert not _statuses(result)
    assert result.text == "straight away"
    started = time.monotonic()
    assert _post(a, sid, "again", "enqueue").status == 200
    assert time.monotonic() - started < 5


def test_past_the_queues_bound_a_message_is_refused_with_429_and_nothing_stored(
    fake: FakeUpstreamHandle, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {**_env(fake, database_url, redis_url, "small"), "COPILOT_MAX_QUEUED": "1"}
    sid = f"full-{uuid.uuid4().hex[:8]}"
    with serve(env, tmp_path) as small:
        running = threading.Thread(
            target=_safe_post, args=(small, sid, "[[fake:text tokens=100 rate=40]]", None)
        )
        running.start()
        with small.client() as http:
            wait_until(
                lambda: http.get(f"/api/v1/sessions/{sid}").json().get("status") == "running"
            )
        waiting = threading.Thread(target=_safe_post, args=(small, sid, "second", "enqueue"))
        waiting.start()
        wait_until(lambda: _waiting(database_url, sid) == 1)
        with small.client() as http:
            refused = http.post(
                "/api/v1/chat", json={"id": sid, "message": "third", "on_conflict": "enqueue"}
            )
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "queue_full"
            assert refused.headers["retry-after"] == "5"
            http.post(f"/api/v1/chat/{sid}/stop")
        running.join(30)
        waiting.join(30)
        _settled(small, sid)
        texts = [_text(m) for m in _history(small, sid) if m["role"] == "user"]
        assert "third" not in texts
        assert "second" in texts


def test_a_client_that_left_its_queued_post_resumes_it_like_any_turn(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    sid = f"left-{uuid.uuid4().hex[:8]}"
    running = threading.Thread(
        target=_safe_post, args=(a, sid, "[[fake:text tokens=40 rate=40]]", None)
    )
    running.start()
    with b.client() as http:
        wait_until(lambda: http.get(f"/api/v1/sessions/{sid}").json().get("status") == "running")
    body = orjson.dumps(
        {
            "id": sid,
            "message": "[[fake:text tokens=60 rate=30]]",
            "on_conflict": "enqueue",
        }
    )
    host, port = b.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:  # sent, then gone
        sock.sendall(
            b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        assert b"200 OK" in sock.recv(4096)
    running.join(30)

    def resumed_answer() -> StreamResult | None:
        with a.client() as http:
            result = stream(http, "GET", f"/api/v1/chat/{sid}/stream")
        if result.status == 200 and len(_own_turn(result).text.split()) == 60:
            return result
        return None

    result = wait_until(resumed_answer, timeout=30, interval=0.2)
    assert_well_formed(_own_turn(result))
