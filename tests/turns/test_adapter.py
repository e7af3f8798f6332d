"""The AgentEvent -> UI chunk adapter: what it bills."""

from __future__ import annotations

from app.backends.events import UsageReport
from app.store.usage import Usage
from app.turns.adapter import ChunkAdapter


def _report(output: int, estimate: int | None = None) -> UsageReport:
    return UsageReport(
        Usage(output_tokens=output), "m", None if estimate is None else (lambda: estimate)
    )


def test_a_call_whose_final_count_never_came_bills_its_estimate() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_report(1, estimate=10))
    assert adapter.usage.output_tokens == 10


def test_a_final_count_replaces_the_estimate() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_report(1, estimate=10))
    adapter.handle(_report(6))
    assert adapter.usage.output_tokens == 7


def test_a_cut_call_followed_by_another_keeps_its_estimate() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_report(1, estimate=10))  # cut: a retried attempt follows
    adapter.handle(_report(1, estimate=3))
    adapter.handle(_report(6))
    assert adapter.usage.output_tokens == 17


def test_an_estimate_below_the_announced_count_bills_the_count() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_report(1, estimate=0))
    assert adapter.usage.output_tokens == 1
