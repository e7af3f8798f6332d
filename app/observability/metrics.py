"""Prometheus metrics: process metrics from the default collectors, plus the service's own.

Every label value comes from a bounded set (backends, statuses, error codes, models, rungs,
conflict policies), never a user or session id. Nothing here is touched per text delta: turns
are counted at their moments (`app/turns/observer.py`), the EventLog once per flush window
and turn, and the Claude SDK backend's processes are counted when `/metrics` is scraped.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Protocol, runtime_checkable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300)

TURNS_STARTED = Counter("copilot_turns_started_total", "Turns started", ["backend"])
TURNS_FINISHED = Counter(
    "copilot_turns_finished_total", "Turns finished", ["backend", "status", "error_code"]
)
TURNS_ACTIVE = Gauge("copilot_turns_active", "Turns running on this replica")
STREAMS_ACTIVE = Gauge("copilot_streams_active", "SSE consumers connected to this replica")
TTFT_SECONDS = Histogram(
    "copilot_turn_time_to_first_token_seconds",
    "Time from turn start to the first visible chunk",
    ["backend"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
TURN_SECONDS = Histogram(
    "copilot_turn_duration_seconds",
    "Time from turn start to its final write and the session's release",
    ["backend"],
    buckets=TURN_BUCKETS,
)
UPSTREAM_RETRIES = Counter(
    "copilot_upstream_retries_total", "Upstream calls retried", ["error_code"]
)
TOKENS = Counter(
    "copilot_tokens_total",
    "Tokens billed to finished turns, by the turn's model and kind",
    ["model", "kind"],
)
COST_USD = Counter("copilot_cost_usd_total", "Cost of finished turns in USD", ["model"])
CONTEXT_RUNGS = Counter(
    "copilot_context_rungs_total",
    "Climbs of the context ladder, by the rung reached and why",
    ["rung", "reason"],
)
COMPACTIONS = Counter(
    "copilot_context_compactions_total",
    "Contexts made smaller: summary, truncation, trim (the ladder) or cli (the CLI's own)",
    ["method", "trigger"],
)
LEASE_CONTENTION = Counter(
    "copilot_lease_contention_total", "Turn starts that found their session's lease taken"
)
USER_CAP_REFUSALS = Counter(
    "copilot_user_cap_refusals_total",
    "Turn starts refused because their user ran COPILOT_MAX_ACTIVE_TURNS_PER_USER turns",
)
TURNS_REAPED = Counter(
    "copilot_turns_reaped_total",
    "Turns of dead replicas this replica recorded as interrupted (the reaper)",
)
REAPER_SWEEPS = Histogram(
    "copilot_reaper_sweep_seconds",
    "One look for turns whose replica stopped renewing their lease",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
START_CONFLICTS = Counter(
    "copilot_start_conflicts_total",
    "How starts that found their session busy ended, by on_conflict policy",
    ["policy", "outcome"],
)
EVENTLOG_APPEND_LAG = Histogram(
    "copilot_eventlog_append_lag_seconds",
    "Time a turn's oldest queued frame waited between append and its XADD",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Kinds of `copilot_tokens_total`, as named on `app.store.usage.Usage`.
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


@runtime_checkable
class ProcessCensus(Protocol):
    """Something that runs processes for turns (the Claude SDK backend's warm CLIs)."""

    def census(self) -> Mapping[str, int]:
        """Counts by gauge name: `cli_processes`, `warm_clients`."""
        ...


class CensusCollector(Collector):
    """Gauges read at scrape time from every watched `ProcessCensus`, summed.

    Counted when Prometheus asks rather than kept up to date as clients come and go: the pool
    stays free of metrics code, and a gauge cannot drift from what the pool holds."""

    GAUGES = {
        "cli_processes": (
            "copilot_sdk_cli_processes",
            "Claude Code CLI processes of this replica (busy, warm or closing)",
        ),
        "warm_clients": (
            "copilot_sdk_warm_clients",
            "Idle warm CLI clients waiting for their session's next turn",
        ),
    }

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[ProcessCensus] = weakref.WeakSet()

    def watch(self, source: ProcessCensus) -> None:
        """Count `source`'s processes from now on (until it is garbage)."""
        self._sources.add(source)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals = dict.fromkeys(self.GAUGES, 0)
        for source in list(self._sources):
            for key, value in source.census().items():
                if key in totals:
                    totals[key] += value
        for key, (name, documentation) in self.GAUGES.items():
            yield GaugeMetricFamily(name, documentation, value=totals[key])

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, documentation in self.GAUGES.values():
            yield GaugeMetricFamily(name, documentation)


PROCESSES = CensusCollector()
REGISTRY.register(PROCESSES)


def watch_processes(source: object) -> None:
    """Report `source`'s processes on `/metrics` if it keeps any (it has `census()`)."""
    if isinstance(source, ProcessCensus):
        PROCESSES.watch(source)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
