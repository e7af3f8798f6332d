"""ChunkAdapter: a backend's AgentEvents become well-formed UI message chunks."""

from __future__ import annotations

from typing import Any

import pytest

from app.backends.events import (
    AgentEvent,
    Finished,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StatusNote,
    StepEnd,
    StepStart,
    TextDelta,
    TextEnd,
    TextStart,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    UsageReport,
)
from app.store.usage import Usage
from app.turns.adapter import ChunkAdapter


class Recorder:
    """An adapter wired to a list of the chunks it emits."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, Any]] = []
        self.adapter = ChunkAdapter(self.chunks.append)

    def feed(self, *events: AgentEvent) -> list[dict[str, Any]]:
        for event in events:
            self.adapter.handle(event)
        return self.chunks

    def types(self) -> list[str]:
        return [chunk["type"] for chunk in self.chunks]


def _nones(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path or "<root>"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nones(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nones(v, f"{path}[{i}]")]
    return []


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


# -- steps -------------------------------------------------------------------------------------


def test_a_step_start_alone_emits_nothing(rec: Recorder) -> None:
    rec.feed(StepStart())
    assert rec.chunks == []


def test_a_step_with_no_content_leaves_no_chunks(rec: Recorder) -> None:
    rec.feed(StepStart(), StepEnd(), StepStart(), StepEnd())
    assert rec.chunks == []


def test_the_step_opens_on_its_first_content(rec: Recorder) -> None:
    rec.feed(StepStart(), TextDelta("t1", "hi"))
    assert rec.types() == ["start-step", "text-start", "text-delta"]


def test_content_without_a_step_start_event_still_opens_a_step(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "hi"))
    assert rec.types()[0] == "start-step"


def test_step_end_closes_the_open_step(rec: Recorder) -> None:
    rec.feed(StepStart(), TextStart("t1"), TextDelta("t1", "a"), TextEnd("t1"), StepEnd())
    assert rec.types() == ["start-step", "text-start", "text-delta", "text-end", "finish-step"]


def test_a_new_step_start_closes_the_previous_step(rec: Recorder) -> None:
    rec.feed(StepStart(), TextDelta("t1", "a"), StepStart(), TextDelta("t2", "b"))
    assert rec.types() == [
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
    ]


def test_steps_stay_balanced_over_several_model_calls(rec: Recorder) -> None:
    rec.feed(
        StepStart(),
        ToolCallStart("c1", "search"),
        ToolCallReady("c1", "search", {"q": "x"}),
        ToolResult("c1", ["hit"]),
        StepEnd(),
        StepStart(),
        TextDelta("t1", "done"),
        StepEnd(),
        Finished("stop"),
    )
    assert rec.types().count("start-step") == rec.types().count("finish-step") == 2


def test_step_end_twice_emits_one_finish_step(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), StepEnd(), StepEnd())
    assert rec.types().count("finish-step") == 1


def test_an_attempt_that_fails_before_its_first_delta_leaves_no_step(rec: Recorder) -> None:
    rec.feed(StepStart(), TextStart("t1"))
    rec.adapter.end_step()  # what the runner does when the attempt raises
    assert rec.chunks == []


# -- text and reasoning parts ------------------------------------------------------------------


def test_text_start_is_passed_on_before_its_deltas(rec: Recorder) -> None:
    rec.feed(TextStart("t1"), TextDelta("t1", "a"), TextDelta("t1", "b"))
    assert rec.chunks[1:] == [
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "a"},
        {"type": "text-delta", "id": "t1", "delta": "b"},
    ]


def test_a_text_delta_without_text_start_opens_the_part_first(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"))
    assert rec.chunks == [
        {"type": "start-step"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "a"},
    ]


def test_a_reasoning_delta_without_reasoning_start_opens_the_part_first(rec: Recorder) -> None:
    rec.feed(ReasoningDelta("r1", "hmm"))
    assert rec.chunks == [
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r1"},
        {"type": "reasoning-delta", "id": "r1", "delta": "hmm"},
    ]


def test_text_end_closes_the_part(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), TextEnd("t1"))
    assert rec.chunks[-1] == {"type": "text-end", "id": "t1"}
    assert rec.adapter.open_parts == {}


def test_an_end_for_a_part_never_opened_is_dropped(rec: Recorder) -> None:
    rec.feed(TextEnd("ghost"), ReasoningEnd("ghost", "sig"))
    assert rec.chunks == []


def test_a_second_end_for_the_same_part_is_dropped(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), TextEnd("t1"), TextEnd("t1"))
    assert rec.types().count("text-end") == 1


def test_open_parts_are_closed_before_finish_step(rec: Recorder) -> None:
    rec.feed(ReasoningDelta("r1", "think"), TextDelta("t1", "say"), StepEnd())
    assert rec.types()[-3:] == ["reasoning-end", "text-end", "finish-step"]


def test_every_part_is_closed_before_its_step_finishes(rec: Recorder) -> None:
    rec.feed(
        StepStart(),
        ReasoningStart("r1"),
        ReasoningDelta("r1", "x"),
        TextDelta("t1", "y"),
        ToolCallStart("c1", "f"),
        StepStart(),
        TextDelta("t2", "z"),
        Finished("stop"),
    )
    open_ids: set[str] = set()
    for chunk in rec.chunks:
        kind = chunk["type"]
        if kind in ("text-start", "reasoning-start"):
            open_ids.add(chunk["id"])
        elif kind in ("text-end", "reasoning-end"):
            open_ids.remove(chunk["id"])
        elif kind == "finish-step":
            assert open_ids == set()
    assert open_ids == set()


def test_a_reasoning_signature_travels_on_reasoning_end(rec: Recorder) -> None:
    rec.feed(ReasoningDelta("r1", "x"), ReasoningEnd("r1", "sig-abc"))
    assert rec.chunks[-1] == {
        "type": "reasoning-end",
        "id": "r1",
        "providerMetadata": {"anthropic": {"signature": "sig-abc"}},
    }


def test_reasoning_end_without_a_signature_has_no_provider_metadata(rec: Recorder) -> None:
    rec.feed(ReasoningDelta("r1", "x"), ReasoningEnd("r1"))
    assert rec.chunks[-1] == {"type": "reasoning-end", "id": "r1"}


def test_reasoning_closed_by_end_step_carries_no_signature(rec: Recorder) -> None:
    rec.feed(ReasoningDelta("r1", "x"), StepEnd())
    assert {"type": "reasoning-end", "id": "r1"} in rec.chunks


# -- tools -------------------------------------------------------------------------------------


def test_tool_call_start_is_tool_input_start_executed_by_the_provider(rec: Recorder) -> None:
    rec.feed(ToolCallStart("c1", "search"))
    assert rec.chunks == [
        {"type": "start-step"},
        {
            "type": "tool-input-start",
            "toolCallId": "c1",
            "toolName": "search",
            "providerExecuted": True,
        },
    ]


def test_tool_call_delta_is_tool_input_delta(rec: Recorder) -> None:
    rec.feed(ToolCallStart("c1", "search"), ToolCallDelta("c1", '{"q":'))
    assert rec.chunks[-1] == {
        "type": "tool-input-delta",
        "toolCallId": "c1",
        "inputTextDelta": '{"q":',
    }


def test_tool_call_ready_is_tool_input_available_with_the_input(rec: Recorder) -> None:
    rec.feed(ToolCallStart("c1", "search"), ToolCallReady("c1", "search", {"q": "x"}))
    assert rec.chunks[-1] == {
        "type": "tool-input-available",
        "toolCallId": "c1",
        "toolName": "search",
        "input": {"q": "x"},
        "providerExecuted": True,
    }


def test_a_tool_result_is_tool_output_available(rec: Recorder) -> None:
    rec.feed(ToolCallStart("c1", "search"), ToolResult("c1", {"hits": 3}))
    assert rec.chunks[-1] == {
        "type": "tool-output-available",
        "toolCallId": "c1",
        "output": {"hits": 3},
        "providerExecuted": True,
    }


def test_a_failed_tool_result_is_tool_output_error(rec: Recorder) -> None:
    rec.feed(ToolCallStart("c1", "search"), ToolResult("c1", None, "boom"))
    assert rec.chunks[-1] == {
        "type": "tool-output-error",
        "toolCallId": "c1",
        "errorText": "boom",
        "providerExecuted": True,
    }


# -- what became visible -----------------------------------------------------------------------


def test_nothing_is_visible_at_first(rec: Recorder) -> None:
    assert rec.adapter.visible is False


@pytest.mark.parametrize(
    "event",
    [
        StepStart(),
        StepEnd(),
        TextStart("t1"),
        ReasoningStart("r1"),
        UsageReport(Usage(input_tokens=5), "m"),
        StatusNote("compacting"),
        Finished("stop"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_event_without_content_does_not_make_anything_visible(
    rec: Recorder, event: AgentEvent
) -> None:
    rec.feed(event)
    assert rec.adapter.visible is False


@pytest.mark.parametrize(
    "event",
    [
        TextDelta("t1", "a"),
        ReasoningDelta("r1", "a"),
        ToolCallStart("c1", "f"),
        ToolCallDelta("c1", "{"),
        ToolCallReady("c1", "f", {}),
        ToolResult("c1", "ok"),
        ToolResult("c1", None, "failed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_visible_content_makes_the_reply_visible(rec: Recorder, event: AgentEvent) -> None:
    rec.feed(event)
    assert rec.adapter.visible is True


def test_visible_stays_true_after_the_step_ends(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), StepEnd(), StepStart())
    assert rec.adapter.visible is True


# -- usage, status, finish ---------------------------------------------------------------------


def test_usage_reports_accumulate(rec: Recorder) -> None:
    rec.feed(
        UsageReport(Usage(10, 2, 3, 4), "m"),
        UsageReport(Usage(1, 20, 0, 1), "m"),
    )
    assert rec.adapter.usage == Usage(
        input_tokens=11, output_tokens=22, cache_read_tokens=3, cache_write_tokens=5
    )


def test_a_usage_report_emits_no_chunk(rec: Recorder) -> None:
    rec.feed(UsageReport(Usage(10, 2), "m"))
    assert rec.chunks == []


def test_a_status_note_is_a_transient_data_status(rec: Recorder) -> None:
    rec.feed(StatusNote("compacting", {"reason": "auto", "tokens": 1000}))
    assert rec.chunks == [
        {
            "type": "data-status",
            "data": {"status": "compacting", "reason": "auto", "tokens": 1000},
            "transient": True,
        }
    ]


def test_a_status_note_does_not_open_a_step(rec: Recorder) -> None:
    rec.feed(StepStart(), StatusNote("retrying"))
    assert rec.types() == ["data-status"]


def test_finished_keeps_its_reason_and_code(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), Finished("length", "max_output_tokens"))
    assert rec.adapter.finished == Finished("length", "max_output_tokens")


def test_finished_closes_the_open_parts_and_step(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), Finished("stop"))
    assert rec.types()[-2:] == ["text-end", "finish-step"]


def test_finished_emits_no_finish_chunk(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), Finished("stop"))
    assert "finish" not in rec.types()


def test_nothing_is_finished_before_finished(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"), StepEnd())
    assert rec.adapter.finished is None


# -- end_step (errors, stops) ------------------------------------------------------------------


def test_end_step_closes_every_open_part_then_the_step(rec: Recorder) -> None:
    rec.feed(ReasoningDelta("r1", "x"), TextDelta("t1", "y"))
    rec.chunks.clear()
    rec.adapter.end_step()
    assert rec.chunks == [
        {"type": "reasoning-end", "id": "r1"},
        {"type": "text-end", "id": "t1"},
        {"type": "finish-step"},
    ]


def test_end_step_with_nothing_open_emits_nothing(rec: Recorder) -> None:
    rec.adapter.end_step()
    assert rec.chunks == []


def test_end_step_is_idempotent(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "y"))
    rec.adapter.end_step()
    emitted = len(rec.chunks)
    rec.adapter.end_step()
    assert len(rec.chunks) == emitted


def test_content_after_end_step_opens_a_new_step(rec: Recorder) -> None:
    rec.feed(TextDelta("t1", "a"))
    rec.adapter.end_step()
    rec.feed(TextDelta("t2", "b"))
    assert rec.types()[-3:] == ["start-step", "text-start", "text-delta"]


# -- no nulls ----------------------------------------------------------------------------------


def test_no_chunk_carries_a_none_value(rec: Recorder) -> None:
    rec.feed(
        StepStart(),
        UsageReport(Usage(1, 1), "m"),
        ReasoningStart("r1"),
        ReasoningDelta("r1", "x"),
        ReasoningEnd("r1", None),
        ReasoningDelta("r2", "y"),
        ReasoningEnd("r2", ""),
        TextStart("t1"),
        TextDelta("t1", "a"),
        TextEnd("t1"),
        ToolCallStart("c1", "f"),
        ToolCallDelta("c1", "{}"),
        ToolCallReady("c1", "f", {}),
        ToolResult("c1", "ok", None),
        ToolCallStart("c2", "g"),
        ToolCallReady("c2", "g", {}),
        ToolResult("c2", None, "bad"),
        StepEnd(),
        StatusNote("compacting"),
        StepStart(),
        TextDelta("t2", "b"),
        Finished("stop", None),
    )
    assert rec.chunks
    assert [(c["type"], p) for c in rec.chunks for p in _nones(c)] == []


# -- billing a call whose final count never came ----------------------------------------


def _billed(output: int, estimate: int | None = None) -> UsageReport:
    return UsageReport(
        Usage(output_tokens=output), "m", None if estimate is None else (lambda: estimate)
    )


def test_a_call_whose_final_count_never_came_bills_its_estimate() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_billed(1, estimate=10))
    assert adapter.usage.output_tokens == 10


def test_a_final_count_replaces_the_estimate() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_billed(1, estimate=10))
    adapter.handle(_billed(6))
    assert adapter.usage.output_tokens == 7


def test_a_cut_call_followed_by_another_keeps_its_estimate() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_billed(1, estimate=10))  # cut: a retried attempt follows
    adapter.handle(_billed(1, estimate=3))
    adapter.handle(_billed(6))
    assert adapter.usage.output_tokens == 17


def test_an_estimate_below_the_announced_count_bills_the_count() -> None:
    adapter = ChunkAdapter(lambda chunk: None)
    adapter.handle(_billed(1, estimate=0))
    assert adapter.usage.output_tokens == 1
