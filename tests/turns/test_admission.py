"""The start gate whose width adapts to how long starts take."""

from __future__ import annotations

import asyncio

import pytest

from app.turns.admission import AdaptiveGate


async def _fill(gate: AdaptiveGate, n: int) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(gate.acquire()) for _ in range(n)]
    await asyncio.sleep(0)
    return tasks


async def test_waiting_starts_are_admitted_in_arrival_order_up_to_the_limit() -> None:
    gate = AdaptiveGate(ceiling=10, initial=2)
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


async def test_starts_as_fast_as_the_best_while_others_wait_widen_the_gate() -> None:
    gate = AdaptiveGate(ceiling=5, initial=2)
    await _fill(gate, 10)
    for _ in range(3):
        gate.release(0.010)  # as fast as ever, with starts waiting: there was room
        await asyncio.sleep(0)
    assert gate.limit == 5  # grew by one each time, up to the ceiling
    assert gate.in_flight == 5


async def test_starts_much_slower_than_the_best_narrow_the_gate_to_the_floor() -> None:
    gate = AdaptiveGate(ceiling=16, initial=8, floor=2)
    await _fill(gate, 8)
    for _ in range(4):
        gate.release(0.010)
    for _ in range(4):
        gate.release(0.050)  # 5x the best: the admitted starts queue behind each other
    assert gate.limit == 4
    tasks = await _fill(gate, 20)
    for _ in range(10):
        gate.release(0.100)
        await asyncio.sleep(0)
    assert gate.limit == 2
    assert gate.in_flight <= gate.limit + 1
    for task in tasks:
        task.cancel()


async def test_a_cancelled_waiter_gives_up_its_turn_and_nothing_leaks() -> None:
    gate = AdaptiveGate(ceiling=1, initial=1, floor=1)
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
