"""Stopping a session's turn, wherever it runs: the one way every caller stops a turn.

`TurnStopper.stop` is used by `POST /chat/{id}/stop`, `on_conflict: "interrupt"` and
`DELETE /sessions/{id}`. A turn on this replica is asked to stop directly; a turn on another
replica through the session's stop channel: every replica keeps one pattern subscription to
all stop channels (`StopListener`) and stops the turn if it runs there. Either way the caller
waits (bounded) until the turn is persisted and the session's lease released, so a message
sent right after is not refused. A message published while a replica is reconnecting is
lost; the waiting caller then gives up after the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.coord.redis import REDIS_ERRORS, Keys
from app.store.models import ChatSession
from app.turns.registry import TurnRegistry

log = logging.getLogger(__name__)

RETRY_S = (0.5, 5.0)  # first and largest wait before subscribing again after a failure
POLL_S = 0.5  # longest wait for a message: how soon the listener notices it is closing
FORGET = b"forget"  # a stop channel message meaning: the session was deleted, drop its state
STEER = b"steer"  # a stop channel message meaning: a message waits to join the session's turn
STOP_WAIT_S = 10.0  # how long a stop waits for the turn's final write and the session's release
FREED_POLL_S = 0.05  # how often a stop sent to another replica looks whether it took effect


class StopListener:
    """Subscribes to every stop channel under the key prefix and stops local turns."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        keys: Keys,
        registry: TurnRegistry,
        forget: Callable[[str], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.forget = forget
        self._forgetting: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening, in a task of its own."""
        self._task = asyncio.create_task(self._listen(), name="stop-listener")

    async def close(self) -> None:
        """Stop listening. A cancelled pub/sub read of redis-py can swallow the cancellation,
        so the loop also polls (`POLL_S`) and ends by itself once `_closing` is set."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=2 * POLL_S)
            if not done:
                log.warning("stop listener: still running after close")

    def deliver(self, channel: bytes, turn_id: bytes) -> bool:
        """Stop the turn named by a message, if it runs here; whether it did. The message
        `forget` drops what this replica keeps for a deleted session (a warm CLI, files)."""
        session_id = self.keys.session_of_stop_channel(channel.decode(errors="replace"))
        if session_id and turn_id == FORGET and self.forget is not None:
            task = asyncio.create_task(self.forget(session_id))
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)
            return False
        runner = self.registry.for_session(session_id) if session_id else None
        if runner is not None and turn_id == STEER:
            runner.steers_waiting()
            return False
        if runner is None or runner.turn_id != turn_id.decode(errors="replace"):
            return False
        log.info("turn %s: stopped from another replica", runner.turn_id)
        return runner.stop("stopped")

    async def _listen(self) -> None:
        wait = RETRY_S[0]
        failed = False
        while not self._closing:
            pubsub: PubSub | None = None
            try:
                pubsub = await self._subscribe(failed)
                self.subscribed.set()
                wait = RETRY_S[0]
                while not self._closing:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=POLL_S
                    )
                    if message is not None and message["type"] == "pmessage":
                        self.deliver(message["channel"], message["data"])
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                failed = True
                log.warning("stop listener: %r; subscribing again in %.1fs", exc, wait)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_S[1])

    async def _subscribe(self, failed: bool) -> PubSub:
        """A pub/sub connection subscribed to every stop channel.

        On a Cluster, classic pub/sub is broadcast: a message published on any node reaches
        the subscribers of every node, so any live node will do. redis-py's cluster pub/sub
        takes the node from the client's slot map, which (a) is empty until the client has
        run a command (the readers' client may not have: the first subscription used to fail
        with a bare `KeyError` until a resume happened to run one), and (b) still names a dead
        master until something refreshes it. So: learn the topology (afresh after a failure:
        the node we were on may have been failed over), then try the pattern's own node
        first and every other node after it."""
        if not isinstance(self.redis, RedisCluster):
            return await self._subscribe_with(self.redis.pubsub())
        await self.redis.initialize()
        if failed:
            await self.redis.nodes_manager.initialize()
        first = self.redis.get_node_from_key(self.keys.stop_pattern())
        nodes = [first, *(node for node in self.redis.get_nodes() if node is not first)]
        for node in nodes[:-1]:
            with contextlib.suppress(*REDIS_ERRORS):
                return await self._subscribe_with(self.redis.pubsub(node=node))
        return await self._subscribe_with(self.redis.pubsub(node=nodes[-1]))

    async def _subscribe_with(self, pubsub: PubSub) -> PubSub:
        """`pubsub` subscribed to every stop channel; closed if that fails."""
        try:
            await pubsub.psubscribe(self.keys.stop_pattern())
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return pubsub


class TurnStopper:
    """Stops the active turn of a session on whichever replica runs it."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        keys: Keys,
        registry: TurnRegistry,
        listener: StopListener,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cluster: bool,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.listener = listener
        self.sessions = sessions
        self.cluster = cluster

    async def stop(
        self, session_id: str, turn_id: uuid.UUID | None, wait_s: float = STOP_WAIT_S
    ) -> bool:
        """Stop the session's turn (`turn_id` is the session's `active_turn_id` as the caller
        read it) and wait, at most `wait_s`, until the session is free; whether one ran."""
        runner = self.registry.for_session(session_id)
        if runner is not None and runner.stop("stopped"):
            with anyio.move_on_after(wait_s):
                await runner.wait_persisted()
            return True
        if turn_id is None:
            return False
        listeners = await self.redis.publish(self.keys.stop_channel(session_id), str(turn_id))
        others = listeners - self.listener.subscribed.is_set()
        # On a Cluster the count is the receiving node's only. No other replica listening:
        # none runs the turn any more (its lease expires, or the next message records it).
        if others > 0 or self.cluster:
            with anyio.move_on_after(wait_s):
                await self._wait_freed(session_id, turn_id)
        return True

    async def steer(self, session_id: str) -> None:
        """Tell the replica running the session's turn that a message waits to join it (the
        turn then takes it from the queue at its next model call)."""
        runner = self.registry.for_session(session_id)
        if runner is not None:
            runner.steers_waiting()
            return
        await self.redis.publish(self.keys.stop_channel(session_id), STEER)

    async def forget(self, session_id: str) -> None:
        """Tell every replica (this one included) to drop what it keeps for the session."""
        await self.redis.publish(self.keys.stop_channel(session_id), FORGET)

    async def _wait_freed(self, session_id: str, turn_id: uuid.UUID) -> None:
        """Until the session's lease is gone (its turn ended on another replica and released
        it), or another turn has started."""
        lease = self.keys.session_lease(session_id)
        query = select(ChatSession.active_turn_id).where(ChatSession.id == session_id)
        while await self.redis.exists(lease):
            async with self.sessions() as db:
                active = (await db.execute(query)).scalar()
            if active not in (None, turn_id):
                return
            await asyncio.sleep(FREED_POLL_S)
