"""Stops asked for on another replica: one pub/sub listener per replica stops its turns.

`POST /chat/{id}/stop` on a replica that does not run the session's turn publishes the turn
id on the session's stop channel; every replica listens to the pattern of all stop channels
and stops the turn if it runs there. A message published while a replica is reconnecting is
lost; the replica that published sees that the turn did not end (see `app/api/chat.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis, RedisCluster

from app.coord.redis import Keys
from app.turns.registry import TurnRegistry

log = logging.getLogger(__name__)

RETRY_S = (0.5, 5.0)  # first and largest wait before subscribing again after a failure
POLL_S = 0.5  # longest wait for a message: how soon the listener notices it is closing


class StopListener:
    """Subscribes to every stop channel under the key prefix and stops local turns."""

    def __init__(self, redis: Redis | RedisCluster, keys: Keys, registry: TurnRegistry) -> None:
        self.redis = redis
        self.keys = keys
        self.registry = registry
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
        """Stop the turn named by a message, if it runs here; whether it did."""
        session_id = self.keys.session_of_stop_channel(channel.decode(errors="replace"))
        runner = self.registry.for_session(session_id) if session_id else None
        if runner is None or runner.turn_id != turn_id.decode(errors="replace"):
            return False
        log.info("turn %s: stopped from another replica", runner.turn_id)
        return runner.stop("stopped")

    async def _listen(self) -> None:
        wait = RETRY_S[0]
        while not self._closing:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(self.keys.stop_pattern())
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
                log.warning("stop listener: %s; subscribing again in %.1fs", exc, wait)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_S[1])
