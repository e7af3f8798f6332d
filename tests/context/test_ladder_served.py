"""The context ladder on the Messages API backend, served: a fake upstream with a small window.

The fake counts about four characters a token and refuses a request over its window with the
API's 400 "prompt is too long"; the server is told the same window. Queued plans script the
calls one by one: the turn's own calls and the compaction's summary call, in that order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools.fake_upstream import FakeUpstreamConfig, FakeUpstreamHandle, running_fake_upstream
from app.devtools.fake_upstream.tokens import estimate_input
from app.store.compactions import SUMMARY_INTRO
from tests.context.chat import long_conversation, markers, say
from tests.serving import Served, serve, upstream_env

WINDOW = 6_000  # tokens, as the fake counts them and as the server is told
TOO_SMALL = {"kind": "echo", "context": 50}  # a call that fails with prompt_too_long


@pytest.fixture(scope="module")
def small_fake() -> Iterator[FakeUpstreamHandle]:
    with running_fake_upstream(config=FakeUpstreamConfig(context_tokens=WINDOW)) as handle:
        yield handle


def _env(fake: FakeUpstreamHandle, database_url: str, redis_url: str) -> dict[str, str]:
    return upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_CONTEXT_WINDOWS=f'{{"claude": {WINDOW}}}',
        COPILOT_COMPACT_TIMEOUT_S="5",
    )


@pytest.fixture(scope="module")
def served(
    small_fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    with serve(_env(small_fake, database_url, redis_url), tmp_path_factory.mktemp("s")) as s:
        yield s


@pytest.fixture
def http(served: Served, small_fake: FakeUpstreamHandle) -> Iterator[httpx.Client]:
    small_fake.reset()
    with served.client() as client:
        yield client


def _sid() -> str:
    return f"ladder-{uuid.uuid4().hex[:8]}"


def _last_turn(http: httpx.Client, sid: str) -> dict[str, Any]:
    turns = http.get(f"/api/v1/sessions/{sid}/turns").json()["turns"]
    return dict(turns[-1])


def _history(http: httpx.Client, sid: str, turns: int) -> None:
    for i in range(turns):
        say(http, sid, f"message {i}: " + "words of the early conversation " * 6)


def test_a_prompt_too_long_compacts_and_the_turn_goes_on(
    http: httpx.Client, small_fake: FakeUpstreamHandle
) -> None:
    sid = _sid()
    _history(http, sid, 4)
    small_fake.reset()
    small_fake.enqueue(TOO_SMALL)  # the full context fails; the summary and the retry do not
    result = say(http, sid, "the question that does not fit")
    assert result.error is None
    assert result.text == "Echo: the question that does not fit"
    status = [c["data"] for c in result.of("data-status")]
    assert status == [{"status": "compacting", "rung": 2, "reason": "prompt_too_long"}]
    turn = _last_turn(http, sid)
    assert turn["status"] == "completed"
    assert turn["context_rung"] == 2
    first, second = turn["attempt_log"]
    assert (first["context_rung"], first["error_code"]) == (1, "prompt_too_long")
    assert (second["context_rung"], second["reason"]) == (2, "prompt_too_long")
    assert second["tokens_after"] < second["tokens_before"]
    assert markers(http, sid)[-1]["method"] == "summary"
    calls = small_fake.requests("/v1/messages")
    assert [c["status"] for c in calls] == [400, 200, 200]
    summary_request = calls[1]["json"]
    assert "message 0" in str(summary_request["messages"])
    retried = calls[2]["json"]["messages"]
    assert SUMMARY_INTRO in str(retried[0])
    assert "message 0" not in str(retried)
    # the summary call is billed to the turn that needed it
    usage = turn["usage"]
    billed = usage["input_tokens"] + usage["cache_read_tokens"] + usage["cache_write_tokens"]
    spent = sum(estimate_input(c["json"]).total for c in calls[1:])
    assert billed == spent
    assert (first["input_tokens"], second["input_tokens"]) == (0, spent)  # on the rung's attempt


def test_the_next_turn_starts_from_the_compaction(
    http: httpx.Client, small_fake: FakeUpstreamHandle
) -> None:
    sid = _sid()
    _history(http, sid, 4)
    small_fake.enqueue(TOO_SMALL)
    say(http, sid, "compact now")
    small_fake.reset()
    result = say(http, sid, "and then")
    assert result.error is None
    (call,) = small_fake.requests("/v1/messages")
    sent = str(call["json"]["messages"])
    assert SUMMARY_INTRO in sent
    assert "message 0" not in sent
    assert "compact now" in sent  # the tail is kept verbatim


def test_a_failing_summary_falls_back_to_truncation(
    http: httpx.Client, small_fake: FakeUpstreamHandle
) -> None:
    sid = _sid()
    _history(http, sid, 4)
    refused = {"kind": "error", "status": 400, "error_type": "invalid_request_error"}
    small_fake.enqueue(TOO_SMALL, refused)
    result = say(http, sid, "after a failed summary")
    assert result.error is None
    assert markers(http, sid)[-1]["method"] == "truncation"
    assert _last_turn(http, sid)["status"] == "completed"


def test_a_compacted_context_still_too_long_goes_to_the_db_only_rung(
    http: httpx.Client, small_fake: FakeUpstreamHandle
) -> None:
    sid = _sid()
    _history(http, sid, 4)
    small_fake.enqueue(TOO_SMALL, {"kind": "echo"}, TOO_SMALL)  # full, summary, compacted
    result = say(http, sid, "third time lucky")
    assert result.error is None
    assert [c["data"]["rung"] for c in result.of("data-status")] == [2, 3]
    turn = _last_turn(http, sid)
    assert [a["context_rung"] for a in turn["attempt_log"]] == [1, 2, 3]
    assert turn["context_rung"] == 3
    assert [m["method"] for m in markers(http, sid)[-2:]] == ["summary", "trim"]


def test_one_message_larger_than_the_window_ends_with_context_exhausted(
    http: httpx.Client, small_fake: FakeUpstreamHandle
) -> None:
    sid = _sid()
    result = say(http, sid, "far too long " * 3_000)
    assert result.error is not None
    assert result.error["code"] == "context_exhausted"
    assert "shorten it" in result.error["message"]
    assert small_fake.requests("/v1/messages") == []  # known without asking the model
    after = say(http, sid, "a normal message")
    assert after.error is None
    assert after.text == "Echo: a normal message"


def test_a_long_conversation_with_tools_never_fails_and_compacts_now_and_then(
    http: httpx.Client,
) -> None:
    sid = _sid()
    long_conversation(http, sid, 200, filler=3)
    compactions = markers(http, sid)
    assert 2 <= len(compactions) <= 40
    assert all(m["trigger"] == "proactive" for m in compactions)


def test_a_session_compacted_on_one_replica_continues_compacted_on_another(
    served: Served,
    small_fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    sid = _sid()
    small_fake.reset()
    with served.client() as a:
        _history(a, sid, 4)
        small_fake.enqueue(TOO_SMALL)
        say(a, sid, "compacted on A")
    small_fake.reset()
    with serve(_env(small_fake, database_url, redis_url), tmp_path) as other, other.client() as b:
        result = say(b, sid, "continued on B")
    assert result.error is None
    (call,) = small_fake.requests("/v1/messages")
    sent = str(call["json"]["messages"])
    assert SUMMARY_INTRO in sent
    assert "message 0" not in sent
