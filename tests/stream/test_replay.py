"""Rebuilding and closing UI message streams."""

from __future__ import annotations

from app.stream import chunks
from app.stream.replay import closing_chunks, message_chunks
from app.stream.sse import frame


def test_a_stream_cut_mid_text_is_closed_part_then_step_after_its_last_sequence() -> None:
    sent = [
        {"type": "start", "messageId": "m"},
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r"},
        {"type": "reasoning-end", "id": "r"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "id: 99\n\nhalf"},
    ]
    frames = [frame(seq, chunk) for seq, chunk in enumerate(sent)]
    assert closing_chunks([b"", *frames]) == (
        5,
        [{"type": "text-end", "id": "t"}, {"type": "finish-step"}],
    )


def test_a_stream_between_steps_needs_nothing_closed() -> None:
    sent = [{"type": "start", "messageId": "m"}, {"type": "start-step"}, {"type": "finish-step"}]
    assert closing_chunks([frame(seq, chunk) for seq, chunk in enumerate(sent)]) == (2, [])


def test_a_stored_failure_replays_as_the_live_stream_said_it() -> None:
    parts = [
        {"type": "step-start"},
        {"type": "text", "text": "half"},
        chunks.data_error("interrupted", "the turn was cut", True),
    ]
    replayed = message_chunks("m", parts)
    kinds = [c["type"] for c in replayed]
    assert kinds == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "data-error",
        "finish-step",
        "error",
    ]
    assert replayed[-1] == chunks.error("interrupted: the turn was cut")
