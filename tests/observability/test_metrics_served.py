"""`/metrics` of a real `copilot serve` after a scripted workload agrees with its turns table.

A plain turn, a turn retried once (529), a tool call, and a conflict (a 409 under `reject`,
then an `interrupt`) on the Messages API backend; then the counters, taken as the change
since before the workload, must say what `GET /sessions/{id}/turns` says.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import (
    Served,
    assert_well_formed,
    finished_turn,
    serve,
    stream,
    turns,
    upstream_env,
    wait_until,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
MODEL = "claude-sonnet-4-6"


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_ANTHROPIC_MODEL=MODEL,
        COPILOT_RETRY_BASE_DELAY_S="0.01",
        COPILOT_RETRY_MAX_DELAY_S="0.05",
    )
    with serve(env, tmp_path_factory.mktemp("metrics")) as server:
        yield server


def scrape(http: httpx.Client) -> Samples:
    """Every sample of `/metrics`, by name and labels."""
    response = http.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the sample `name{labels}` grew."""
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def _chat(http: httpx.Client, session_id: str, message: str) -> None:
    result = stream(http, "POST", "/api/v1/chat", json={"id": session_id, "message": message})
    assert_well_formed(result)


def _workload(served: Served, http: httpx.Client) -> list[str]:
    """Run the turns; the sessions they ran in."""
    plain, retried, tool, busy = (f"metrics-{uuid.uuid4().hex[:8]}" for _ in range(4))
    _chat(http, plain, "hello")
    _chat(http, retried, "[[fake:error status=529 times=1]] try again")
    _chat(http, tool, 'six sevens [[fake:tool name=calculate input={"expression": "6*7"}]]')
    body = {"id": busy, "message": "[[fake:text tokens=400 rate=50]]"}
    with served.client() as other, other.stream("POST", "/api/v1/chat", json=body) as running:
        assert running.status_code == 200
        lines = running.iter_lines()
        while '"text-delta"' not in next(lines):
            pass
        refused = http.post("/api/v1/chat", json={"id": busy, "message": "and now?"})
        assert refused.status_code == 409
        interrupting = {"id": busy, "message": "instead", "on_conflict": "interrupt"}
        assert_well_formed(stream(http, "POST", "/api/v1/chat", json=interrupting))
    for session_id in (plain, retried, tool, busy):
        finished_turn(http, session_id)
    return [plain, retried, tool, busy]


def test_metrics_agree_with_the_turns_table(served: Served) -> None:
    with served.client() as http:
        before = scrape(http)
        sessions = _workload(served, http)
        rows: list[dict[str, Any]] = [t for s in sessions for t in turns(http, s)]
        assert len(rows) == 5
        assert all(t["status"] != "running" for t in rows)
        after = wait_until(
            lambda: (s := scrape(http))[("copilot_turns_active", frozenset())] == 0 and s
        )

    assert delta(before, after, "copilot_turns_started_total", backend="anthropic") == len(rows)
    outcomes = Counter((t["status"], t["error_code"] or "") for t in rows)
    assert outcomes[("completed", "")] == 4
    for (status, code), count in outcomes.items():
        labels = {"backend": "anthropic", "status": status, "error_code": code}
        assert delta(before, after, "copilot_turns_finished_total", **labels) == count

    for kind in ("input", "output", "cache_read", "cache_write"):
        stored = sum(t["usage"][f"{kind}_tokens"] for t in rows)
        counted = delta(before, after, "copilot_tokens_total", model=MODEL, kind=kind)
        assert counted == stored, kind
    assert delta(before, after, "copilot_tokens_total", model=MODEL, kind="output") > 0
    cost = sum(Decimal(str(t["usage"]["cost_usd"])) for t in rows)
    assert cost > 0
    counted_cost = delta(before, after, "copilot_cost_usd_total", model=MODEL)
    assert counted_cost == pytest.approx(float(cost), abs=1e-9)

    retries = sum(t["attempts"] - 1 for t in rows)
    assert retries == 1
    assert delta(before, after, "copilot_upstream_retries_total", error_code="overloaded") == 1

    with_ttft = sum(t["ttft_ms"] is not None for t in rows)
    ttft = "copilot_turn_time_to_first_token_seconds_count"
    assert delta(before, after, ttft, backend="anthropic") == with_ttft
    duration = "copilot_turn_duration_seconds_count"
    assert delta(before, after, duration, backend="anthropic") == len(rows)

    assert delta(before, after, "copilot_lease_contention_total") == 2
    conflicts = "copilot_start_conflicts_total"
    assert delta(before, after, conflicts, policy="reject", outcome="rejected") == 1
    assert delta(before, after, conflicts, policy="interrupt", outcome="interrupted") == 1

    assert delta(before, after, "copilot_eventlog_append_lag_seconds_count") >= len(rows)
    assert after[("copilot_sdk_cli_processes", frozenset())] == 0
