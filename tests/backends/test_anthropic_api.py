"""The `anthropic` backend over a real server and the fake upstream."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from app.store.usage import estimated_tokens
from tests.serving import Served, finished_turn, parse_sse, serve, upstream_env


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    env = upstream_env(fake.base_url, database_url, redis_url)
    with serve(env, tmp_path_factory.mktemp("anthropic")) as server:
        yield server


def test_a_turn_stopped_mid_text_bills_the_output_it_streamed(served: Served) -> None:
    # Regression: a call cut before `message_delta` billed the 1 output token that
    # `message_start` announces.
    sid = f"bill-{uuid.uuid4().hex[:8]}"
    body = b""
    message = {"id": sid, "message": "[[fake:text tokens=3000 rate=200]]"}
    with served.client() as http, http.stream("POST", "/api/v1/chat", json=message) as response:
        pieces = response.iter_raw()
        while body.count(b'"text-delta"') < 40:
            body += next(pieces)
        with served.client() as other:
            assert other.post(f"/api/v1/chat/{sid}/stop").status_code == 202
        for piece in pieces:
            body += piece
    chunks = parse_sse(body)[0]
    streamed = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    with served.client() as http:
        turn = finished_turn(http, sid)
    assert turn["status"] == "stopped"
    assert turn["usage"]["output_tokens"] == estimated_tokens(len(streamed))
    assert turn["usage"]["output_tokens"] >= 40
    assert chunks[-1]["messageMetadata"]["usage"]["outputTokens"] == estimated_tokens(len(streamed))
    assert float(turn["usage"]["cost_usd"]) > 0
