"""The EventLog: each turn's encoded chunks in a Redis Stream, for consumers on other replicas.

Chunks are appended in batches: one replica-wide writer wakes every flush window and sends one
pipeline holding an XADD per turn that has new chunks, so Redis work grows with time and the
number of active turns, never with the number of tokens. The log is a cache with a TTL;
Postgres is the truth, and a failed append is logged, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

from app.coord.lock import STREAM_FIELD
from app.coord.redis import READ_BLOCK_MAX_S, REDIS_ERRORS, is_transient
from app.observability import metrics
from app.stream.sse import frame_seq, split_frames

log = logging.getLogger(__name__)

FIELD_DATA = STREAM_FIELD.encode()  # created with the lease (`Lease.acquire`)
FIELD_END = b"e"
# Marks the entry a reaper wrote to close the log of a turn whose replica died: a client may
# hold frames that died with that replica (the last flush window's), and so already hold the
# sequence numbers these frames were given. They are always delivered, numbered on from
# what the reader has (`entry_continuation`).
FIELD_CLOSING = b"c"


# A reader rides out a Redis outage this long before giving its stream up (a Cluster promotes
# a dead master's replica a little after `cluster-node-timeout`, 15 s by default), trying again
# every `READ_RETRY_S`: redis-py's Cluster client retries a command at once, without a pause,
# so its own retries are spent long before a replica takes over.
READ_OUTAGE_S = 30.0
READ_RETRY_S = 0.2

# After this many failed flushes in a row (about 10 s at the default window) queued frames
# are dropped rather than kept in memory without end; replicas then resume from Postgres.
MAX_FAILED_FLUSHES = 400


# KEYS: the turns' logs; ARGV[1]: TTL; then for each key its frames and "1" if it ended.
_APPEND_ALL = f"""
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  local data, ended = ARGV[2 * i], ARGV[2 * i + 1]
  if ended == '1' then
    if redis.call('xadd', key, 'NOMKSTREAM', '*', '{FIELD_DATA.decode()}', data,
                  '{FIELD_END.decode()}', '1') then
      redis.call('expire', key, ttl)
    end
  else
    redis.call('xadd', key, 'NOMKSTREAM', '*', '{FIELD_DATA.decode()}', data)
  end
end
return #KEYS
"""


class EventLogGap(Exception):
    """A turn's EventLog lacks frames its reader has not seen (lost in a Redis failover)."""


@dataclass
class _Pending:
    frames: list[bytes] = field(default_factory=list)
    ended: bool = False
    # When the oldest of `frames` was queued: its wait until the XADD is the append lag.
    since: float = field(default_factory=time.monotonic)


class EventLogWriter:
    """Batches appends of every turn on this replica into one pipeline per flush window."""

    def __init__(self, redis: Redis | RedisCluster, flush_s: float, ttl_s: int) -> None:
        self.redis = redis
        self.flush_s = flush_s
        self.ttl_s = ttl_s
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._sha = ""

    async def load_script(self) -> None:
        """Register the batched-append script (single node only)."""
        if not isinstance(self.redis, RedisCluster):
            self._sha = await self.redis.script_load(_APPEND_ALL)

    def start(self) -> None:
        """Start the background flusher."""
        self._task = asyncio.create_task(self._loop(), name="eventlog-writer")

    def append(self, key: str, frame: bytes) -> None:
        """Queue an encoded frame for the turn's log."""
        self._pending.setdefault(key, _Pending()).frames.append(frame)
        self._wake.set()

    def end(self, key: str) -> None:
        """Mark the turn's log complete (after its last frame)."""
        self._pending.setdefault(key, _Pending()).ended = True
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send everything queued so far."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._append(batch)
            self._failures = 0
            done = time.monotonic()
            for pending in batch.values():
                metrics.EVENTLOG_APPEND_LAG.observe(done - pending.since)
        except REDIS_ERRORS as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 100 == 0:
                log.warning("EventLog append failed (%d in a row): %s", self._failures, exc)
            if self._failures >= MAX_FAILED_FLUSHES:
                log.error("EventLog: dropping %d turns' queued frames", len(batch))
                return
            # Put the batch back in front of what came meanwhile: a log with a gap would
            # replay a stream the AI SDK rejects. Some of it may have been stored already (a
            # Cluster pipeline fails as a whole when one node does; a failover can lose the
            # reply of an append it kept): readers drop the frames they get twice.
            for key, later in self._pending.items():
                earlier = batch.setdefault(key, _Pending())
                earlier.frames.extend(later.frames)
                earlier.ended = earlier.ended or later.ended
                earlier.since = min(earlier.since, later.since)
            self._pending = batch
            self._wake.set()

    async def _append(self, batch: dict[str, _Pending]) -> None:
        # NOMKSTREAM: a log that expired or was lost stays gone (readers then fall back to
        # Postgres) rather than coming back with a gap the AI SDK would reject. The TTL set
        # when the log was created is renewed once, at the turn's end.
        if isinstance(self.redis, RedisCluster):
            pipe = self.redis.pipeline(transaction=False)
            for key, pending in batch.items():
                entry = {FIELD_DATA: b"".join(pending.frames)}
                if pending.ended:
                    entry[FIELD_END] = b"1"
                pipe.xadd(key, entry, nomkstream=True)  # type: ignore[arg-type]
                if pending.ended:
                    pipe.expire(key, self.ttl_s)
            await pipe.execute()
            return
        # One command for the whole window on a single node: per-command client costs
        # (packing, one reply each) dominated the EventLog's CPU with a pipeline.
        keys = list(batch)
        args: list[bytes | int] = [self.ttl_s]
        for pending in batch.values():
            args.append(b"".join(pending.frames))
            args.append(b"1" if pending.ended else b"")
        if not self._sha:
            await self.load_script()
        try:
            await self.redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted and forgot it
            await self.load_script()
            await self.redis.evalsha(self._sha, len(keys), *keys, *args)

    async def close(self) -> None:
        """Flush what is queued and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5)


async def read_log(
    redis: Redis | RedisCluster, key: str, after_seq: int, block_ms: int
) -> AsyncGenerator[bytes | None, None]:
    """Frames of a turn with sequence > `after_seq`, then live ones; None when nothing came
    within `block_ms` (a chance to send a heartbeat), which is at most `READ_BLOCK_MAX_S`: the
    readers' client times out a little after that. Ends after the log's last entry. Transient
    Redis failures read as silence for up to `READ_OUTAGE_S`; after that they are raised.
    Frames come once each and in order; `EventLogGap` is raised at a hole (see
    `continuation`)."""
    block_ms = min(block_ms, int(READ_BLOCK_MAX_S * 1000))
    last_id = b"0-0"
    failing_since: float | None = None
    while True:
        try:
            reply = await redis.xread({key: last_id}, count=100, block=block_ms)
            if not reply and not await redis.exists(key):
                return
        except REDIS_ERRORS as exc:
            # A failover (or a restart) must not cut the reader's stream: read on from
            # `last_id` once Redis answers again, idle meanwhile, up to `READ_OUTAGE_S`.
            now = time.monotonic()
            failing_since = failing_since or now
            if not is_transient(exc) or now - failing_since > READ_OUTAGE_S:
                raise
            log.info("EventLog read of %s failed, reading on: %r", key, exc)
            yield None
            await asyncio.sleep(READ_RETRY_S)
            continue
        failing_since = None
        if not reply:
            yield None
            continue
        streams = cast(list[tuple[bytes, list[tuple[bytes, Entry]]]], reply)
        for _stream, entries in streams:
            for entry_id, fields in entries:
                last_id = entry_id
                frames, after_seq, hole = entry_continuation(fields, after_seq)
                if frames:
                    yield b"".join(frames)
                if hole:
                    raise EventLogGap(f"{key}: the frames after {after_seq} are lost")
                if FIELD_END in fields:
                    return


def continuation(frames: list[bytes], after_seq: int) -> tuple[list[bytes], int, bool]:
    """The frames that follow frame `after_seq`, in order and once each; the sequence number
    of the last of them (`after_seq` if none); whether a hole comes after them.

    A turn's frames are numbered 0, 1, 2... and appended in order. A frame at or before
    `after_seq` was sent already (`Last-Event-ID`) or is stored twice: an append retried
    after a failover may have been written the first time too (its reply was lost). A frame
    beyond the next one means the ones in between are gone: a failover loses the writes the
    old master acknowledged but had not passed on to its replica yet."""
    out: list[bytes] = []
    for raw in frames:
        seq = frame_seq(raw)
        if seq is None or seq <= after_seq:
            continue
        if seq != after_seq + 1:
            return out, after_seq, True
        out.append(raw)
        after_seq = seq
    return out, after_seq, False


Entry = dict[bytes, bytes]


def renumbered(raw: bytes, seq: int) -> bytes:
    """An encoded frame with another sequence number."""
    return b"id: %d\n" % seq + raw[raw.index(b"\n") + 1 :]


def entry_continuation(fields: Entry, after_seq: int) -> tuple[list[bytes], int, bool]:
    """`continuation` of one log entry's frames; a closing entry's come whole, numbered on
    from `after_seq` (`FIELD_CLOSING`)."""
    frames = split_frames(fields.get(FIELD_DATA, b""))
    if FIELD_CLOSING in fields:
        out = [renumbered(f, after_seq + 1 + i) for i, f in enumerate(frames)]
        return out, after_seq + len(out), False
    return continuation(frames, after_seq)


def frames_after(entries: list[Entry], after_seq: int) -> tuple[list[bytes], int, bool]:
    """The frames of a log's entries that a reader holding up to `after_seq` lacks, as
    `continuation` gives them (up to a hole, if one comes)."""
    out: list[bytes] = []
    for fields in entries:
        frames, after_seq, hole = entry_continuation(fields, after_seq)
        out.extend(frames)
        if hole:
            return out, after_seq, True
    return out, after_seq, False


async def log_entries(redis: Redis | RedisCluster, key: str) -> list[Entry]:
    """Every entry the log holds, in order (empty when it is gone)."""
    entries = cast(list[tuple[bytes, Entry]], await redis.xrange(key))
    return [fields for _id, fields in entries]


def entry_frames(entries: list[Entry]) -> list[bytes]:
    """Every frame of a log's entries, as written."""
    return [f for fields in entries for f in split_frames(fields.get(FIELD_DATA, b""))]


async def log_frames(redis: Redis | RedisCluster, key: str) -> list[bytes]:
    """Every frame the log holds, in order (empty when it is gone)."""
    return entry_frames(await log_entries(redis, key))


async def close_log(redis: Redis | RedisCluster, key: str, frames: list[bytes], ttl_s: int) -> None:
    """End the log of a turn whose replica died with `frames` (a closing entry; the log's
    TTL renewed). A log that is gone stays gone."""
    entry = {FIELD_DATA: b"".join(frames), FIELD_END: b"1", FIELD_CLOSING: b"1"}
    pipe = redis.pipeline(transaction=False)
    pipe.xadd(key, entry, nomkstream=True)  # type: ignore[arg-type]
    pipe.expire(key, ttl_s)
    await pipe.execute()
