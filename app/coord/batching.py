"""Calls that arrive while one is in flight share the next one: one round trip for many.

Under a burst of new chats every start asks Postgres the same kinds of question at about the
same moment. A `Coalescer` makes the first call at once, in its caller's task (so a single
call on an idle server waits for nothing, not even a task switch: on a busy event loop each
switch waits behind every ready callback, and a start makes three such calls), and collects
those that arrive while it is in flight; when it returns, the collected ones go together, as
one call of the batch function. Each caller gets its own answer or its own exception; a
batch function may answer an item with an exception (a refusal that concerns that item
alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Coalescer(Generic[Item, Answer]):
    """Batches the calls made while a batch is in flight (at most `max_batch` per batch)."""

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Answer | BaseException]]],
        max_batch: int = 64,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._busy = False  # a call or a batch is in flight
        self._sending: asyncio.Task[None] | None = None
        self.batches = 0  # batches sent, and items in them: for tests and benchmarks
        self.items = 0

    async def __call__(self, item: Item) -> Answer:
        """`item`'s answer: at once when nothing is in flight (in the caller's own task, so
        a lone call waits for no task switch), else from the next batch."""
        if self._busy:
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            self._waiting.append((item, future))
            return await future
        self._busy = True
        self.batches += 1
        self.items += 1
        try:
            answer = (await self.run([item]))[0]
        finally:
            self._hand_over()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _hand_over(self) -> None:
        """The call in flight is over: those that came meanwhile go as the next batch."""
        if self._waiting:
            self._sending = asyncio.create_task(self._send())
        else:
            self._busy = False

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                live = [(item, future) for item, future in batch if not future.done()]
                if not live:
                    continue
                self.batches += 1
                self.items += len(live)
                try:
                    answers = await self.run([item for item, _ in live])
                except BaseException as exc:  # the whole batch failed: every caller is told
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), answer in zip(live, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            self._sending = None
            self._busy = False
            for _, future in self._waiting:  # cancelled (the loop is closing): no answer
                if not future.done():
                    future.cancel()
            self._waiting.clear()
