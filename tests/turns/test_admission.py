"""The start gate whose width halves on overload and grows back on successes."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import Conflict, TooManyRequests
from app.turns import admission
from app.turns.admission import AdaptiveGate, Admission, is_overload
from app.turns.start import QueuedGone


async def _fill(gate: AdaptiveGate, n: int) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(gate.acquire()) for _ in range(n)]
    await asyncio.sleep(0)
    return tasks


async def test_waiting_starts_are_admitted_in_arrival_order_up_to_the_limit() -> None:
    gate = AdaptiveGate(ceiling=2)
    tasks = await _fill(gate, 5)
    assert (gate.in_flight, gate.waiting) == (2, 3)
    order = []
    for i, task in enumerate(tasks[2:]):
        task.add_done_callback(lambda _, i=i: order.append(i))
    for _ in range(3):
        gate.release()
        for _ in range(3):
            await asyncio.sleep(0)
    assert order == [0, 1, 2]
    assert gate.waiting == 0


async def test_the_gate_opens_wide_and_a_burst_is_admitted_at_once() -> None:
    gate = AdaptiveGate(ceiling=1024)
    tasks = await _fill(gate, 500)
    assert (gate.in_flight, gate.waiting) == (500, 0)
    for task in tasks:
        await task


async def test_an_overload_halves_the_width_once_per_episode_and_successes_widen_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: clock[0])
    gate = AdaptiveGate(ceiling=64, floor=2)
    await _fill(gate, 10)
    for _ in range(10):  # one outage: many failures at once count once
        gate.release(False)
    assert (gate.limit, gate.in_flight) == (32, 0)
    for halving in (16, 8, 4, 2, 2):
        clock[0] += admission.BACKOFF_S
        await gate.acquire()
        gate.release(False)
        assert gate.limit == halving
    for widened in (3, 4, 5, 6, 7, 8, 10, 12, 15, 18):
        await gate.acquire()
        gate.release(True)
        assert gate.limit == widened
    while gate.limit < gate.ceiling:
        await gate.acquire()
        gate.release(True)
    assert gate.limit == 64


@pytest.mark.parametrize(
    ("failure", "overload"),
    [
        (OSError(24, "Too many open files"), True),
        (TimeoutError(), True),
        (ConnectionRefusedError(), True),
        (Conflict("a turn is already running"), False),
        (TooManyRequests("at the cap"), False),
        (QueuedGone("m1"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_only_the_servers_own_failures_count_as_overload(
    failure: BaseException, overload: bool
) -> None:
    assert is_overload(failure) is overload


async def test_a_start_given_back_for_a_refusal_leaves_the_width_alone() -> None:
    gate = AdaptiveGate(ceiling=8)
    place = Admission(gate)
    await place.take()
    place.give_back(Conflict("busy"))
    place.give_back(OSError())  # given back once: nothing more
    assert (gate.limit, gate.in_flight) == (8, 0)
    await place.take()
    place.give_back(OSError())
    assert (gate.limit, gate.in_flight) == (4, 0)


async def test_a_cancelled_waiter_gives_up_its_turn_and_nothing_leaks() -> None:
    gate = AdaptiveGate(ceiling=1, floor=1)
    await gate.acquire()
    waiting = asyncio.create_task(gate.acquire())
    behind = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.release()
    await asyncio.wait_for(behind, 1)
    gate.release()
    assert (gate.in_flight, gate.waiting) == (0, 0)
