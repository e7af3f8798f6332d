"""Gauges read at scrape time: every watched backend's processes, summed; garbage forgotten."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, generate_latest

from app.observability.metrics import CensusCollector, watch_processes


class Pool:
    def __init__(self, processes: int, warm: int) -> None:
        self.counts = {"cli_processes": processes, "warm_clients": warm}

    def census(self) -> dict[str, int]:
        return self.counts


def _scrape(collector: CensusCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_gauges_sum_every_watched_source_at_scrape_time() -> None:
    collector = CensusCollector()
    first, second = Pool(2, 1), Pool(3, 0)
    collector.watch(first)
    collector.watch(second)
    text = _scrape(collector)
    assert "copilot_sdk_cli_processes 5.0" in text
    assert "copilot_sdk_warm_clients 1.0" in text
    first.counts["warm_clients"] = 2
    assert "copilot_sdk_warm_clients 2.0" in _scrape(collector)


def test_a_source_that_is_gone_is_no_longer_counted() -> None:
    collector = CensusCollector()
    collector.watch(Pool(4, 4))
    gc.collect()
    assert "copilot_sdk_cli_processes 0.0" in _scrape(collector)


def test_a_backend_without_processes_is_not_watched() -> None:
    watch_processes(object())  # the Messages API backend: nothing to count, no error
