"""Prometheus metrics: process metrics from the default collectors, plus the service's own."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

TURNS_STARTED = Counter("copilot_turns_started_total", "Turns started", ["backend"])
TURNS_FINISHED = Counter(
    "copilot_turns_finished_total", "Turns finished", ["backend", "status", "error_code"]
)
TURNS_ACTIVE = Gauge("copilot_turns_active", "Turns running on this replica")
STREAMS_ACTIVE = Gauge("copilot_streams_active", "SSE consumers connected to this replica")
TTFT_SECONDS = Histogram(
    "copilot_turn_time_to_first_token_seconds",
    "Time from turn start to the first visible chunk",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
UPSTREAM_RETRIES = Counter(
    "copilot_upstream_retries_total", "Upstream calls retried", ["error_code"]
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
