"""Calls made while one is in flight share the next one."""

from __future__ import annotations

import asyncio

import pytest

from app.coord.batching import Coalescer


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()

    async def run(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await self.gate.wait()
        return [ValueError(i) if i < 0 else i * 10 for i in items]


async def test_the_first_call_goes_alone_and_those_during_it_go_together() -> None:
    recorder = Recorder()
    batched = Coalescer(recorder.run)
    first = asyncio.create_task(batched(1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batched(i)) for i in (2, 3, -4, 5)]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == 10
    assert await asyncio.gather(*rest, return_exceptions=True) == [20, 30, rest[2].exception(), 50]
    assert isinstance(rest[2].exception(), ValueError)  # a refusal answers its own caller only
    assert recorder.batches == [[1], [2, 3, -4, 5]]


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_goes_on() -> None:
    calls = 0

    async def run(items: list[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.01)
            raise ConnectionError("down")
        return items

    batched = Coalescer(run)
    first = asyncio.create_task(batched(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(batched(2))
    with pytest.raises(ConnectionError):
        await first
    assert await second == 2


async def test_a_caller_gone_before_its_batch_is_left_out() -> None:
    recorder = Recorder()
    batched = Coalescer(recorder.run)
    first = asyncio.create_task(batched(1))
    await asyncio.sleep(0)
    gone = asyncio.create_task(batched(2))
    kept = asyncio.create_task(batched(3))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.gate.set()
    assert await first == 10
    assert await kept == 30
    assert recorder.batches == [[1], [3]]


async def test_batches_are_at_most_max_batch() -> None:
    recorder = Recorder()
    batched = Coalescer(recorder.run, max_batch=3)
    calls = asyncio.gather(*(batched(i) for i in range(8)))
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await calls == [i * 10 for i in range(8)]
    assert [len(b) for b in recorder.batches] == [1, 3, 3, 1]  # seven came during the first


async def test_a_lone_call_runs_in_its_callers_task() -> None:
    async def run(items: list[int]) -> list[int | BaseException]:
        return [id(asyncio.current_task())]

    batched: Coalescer[int, int] = Coalescer(run)
    for _ in range(3):  # one after another: each alone, none waits for a task switch
        assert await batched(1) == id(asyncio.current_task())
    assert (batched.batches, batched.items) == (3, 3)


async def test_a_lone_caller_cancelled_hands_the_waiting_ones_on() -> None:
    recorder = Recorder()
    batched = Coalescer(recorder.run)
    first = asyncio.create_task(batched(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(batched(2))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    recorder.gate.set()
    assert await second == 20
    assert await batched(3) == 30  # and the next lone call goes at once again
