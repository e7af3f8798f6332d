"""Resume a turn running on another replica: from its EventLog, or from Postgres without one.

`follow_log` tails the EventLog. While nothing comes it looks at the session's lease: once the
lease is gone the turn's replica ended the turn or died, so a log that does not end soon after
is closed here with what Postgres holds (an `interrupted` error while the turn row still says
running) instead of being waited on until its TTL.

`follow_persisted` (the log is gone) replays the stored reply whole once its turn ends (sending
`: ping` while waiting). If the turn's lease disappears while the reply still says
"streaming", its replica died: what was persisted is replayed with an `interrupted` error, so
the client does not wait forever.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator

import anyio
import orjson

from app.backends.errors import MESSAGES
from app.coord.redis import READ_BLOCK_MAX_S, REDIS_ERRORS, is_transient
from app.lifespan import AppState
from app.store.messages import MessageRepository
from app.store.models import ChatMessage, Turn
from app.stream import chunks
from app.stream.eventlog import EventLogGap, entry_frames, frames_after, log_entries, read_log
from app.stream.replay import closing_chunks, message_chunks
from app.stream.sse import DONE, PING, frame, frame_seq

log = logging.getLogger(__name__)

FINISH_REASONS = {"completed": "stop", "failed": "error", "stopped": "other"}
# A turn that ended normally releases its lease a few milliseconds before the end of its log is
# written: a reader that finds the lease gone and the turn finished waits this long for it.
LOG_END_GRACE_S = 2.0


async def _load(state: AppState, turn_id: uuid.UUID) -> tuple[Turn, ChatMessage | None]:
    async with state.sessions() as db:
        turn = await db.get(Turn, turn_id, populate_existing=True)
        assert turn is not None
        message = await MessageRepository(db).by_message_id(
            turn.session_id, turn.assistant_message_id
        )
        return turn, message


async def follow_persisted(
    state: AppState, session_id: str, turn_id: uuid.UUID, after_seq: int, heartbeat_s: float
) -> AsyncGenerator[bytes, None]:
    """Frames rebuilt from the stored reply once the turn is over (or found orphaned)."""
    poll_s = min(heartbeat_s, state.settings.turns.flush_interval_s)
    waited = 0.0
    while True:
        turn, message = await _load(state, turn_id)
        if turn.status != "running":
            break
        if await _lease_held(state, session_id) is False:
            break
        await anyio.sleep(poll_s)
        waited += poll_s
        if waited >= heartbeat_s:
            waited = 0.0
            yield PING
    parts = list(message.parts) if message is not None else []
    out = message_chunks(turn.assistant_message_id, parts)
    reason = FINISH_REASONS.get(turn.status, "error")
    if turn.status == "running":
        out.extend(chunks.failure("interrupted", MESSAGES["interrupted"], True))
    out.append(chunks.finish(reason, (message.metadata_ if message is not None else None)))
    frames = [frame(seq, chunk) for seq, chunk in enumerate(out) if seq > after_seq]
    yield b"".join(frames) + DONE


async def follow_log(
    state: AppState, session_id: str, turn_id: uuid.UUID, after_seq: int, heartbeat_s: float
) -> AsyncGenerator[bytes, None]:
    """The turn's EventLog after `after_seq`, then live frames, `: ping` while idle, `[DONE]`;
    a turn whose lease is gone ends with what Postgres holds."""
    key = state.keys.turn_events(session_id, str(turn_id))
    block_ms = int(min(heartbeat_s, READ_BLOCK_MAX_S) * 1000)
    last_seq = after_seq
    quiet_since = anyio.current_time()
    give_up_at: float | None = None
    hole = False
    try:
        async for data in read_log(state.redis_readers, key, after_seq, block_ms):
            now = anyio.current_time()
            if data is not None:
                last_seq = _last_seq(data, last_seq)
                quiet_since = now
                yield data
                continue
            if give_up_at is None and await _lease_held(state, session_id) is False:
                turn, _ = await _load(state, turn_id)
                # Still running in Postgres without a lease: its replica died, and a reaper
                # will close the log (what it stores is what this client then sees); if none
                # does in time, this stream is closed here. Finished: the end of its log may
                # still be on its way.
                reaping_s = state.turns.reaper.closes_within_s if state.turns else 0.0
                wait_s = reaping_s if turn.status == "running" else LOG_END_GRACE_S
                give_up_at = now + wait_s
            if give_up_at is not None and now >= give_up_at:
                break
            if now - quiet_since >= heartbeat_s:
                quiet_since = now
                yield PING
        else:
            if await state.redis.exists(key):  # the log ended with its turn
                yield DONE
                return
    except EventLogGap as exc:
        log.warning("resume of turn %s ends early: %s", turn_id, exc)
        hole = True
    yield await _close_from_postgres(state, turn_id, key, last_seq, hole=hole)


async def _lease_held(state: AppState, session_id: str) -> bool | None:
    """Whether the session's lease exists; None while Redis cannot say (a failover under
    way): a reader then waits and asks again rather than ending its stream."""
    try:
        return bool(await state.redis.exists(state.keys.session_lease(session_id)))
    except REDIS_ERRORS as exc:
        if not is_transient(exc):
            raise
        return None


def _last_seq(data: bytes, default: int) -> int:
    """The sequence number of the last of the frames in `data` (frames end with a blank line,
    which the JSON in them never holds)."""
    boundary = data.rfind(b"\n\nid: ", 0, len(data) - 2)
    seq = frame_seq(data[boundary + 2 :] if boundary >= 0 else data)
    return default if seq is None else seq


async def _close_from_postgres(
    state: AppState, turn_id: uuid.UUID, key: str, last_seq: int, *, hole: bool = False
) -> bytes:
    """Close a stream whose log stopped short: the frames logged since the reader's last read,
    its open parts and step, then how Postgres says the turn ended (`interrupted` while the
    row still says running), `finish` and `[DONE]`.

    The frames logged after the last read used to be skipped (numbered past, never sent): a
    failover makes that likely, the owner flushing the frames it queued meanwhile just as the
    reader gives up. After a `hole` in the log the stream ends where the client is, with an
    `interrupted` error: what it lacks is in Postgres once the turn ends."""
    turn, message = await _load(state, turn_id)
    entries = await log_entries(state.redis, key)
    sent = [f for f in entry_frames(entries) if (frame_seq(f) or 0) <= last_seq]
    missed: list[bytes] = []
    if not hole:
        # (with a reaper's closing entry, numbered on from the client's last frame)
        missed, _, hole = frames_after(entries, last_seq)
    if missed and _is_finish(missed[-1]):  # the log's end came after all
        return b"".join(missed) + DONE
    seen, out = closing_chunks(sent + missed)
    if turn.status == "running" or hole:
        out.extend(chunks.failure("interrupted", MESSAGES["interrupted"], True))
    metadata = message.metadata_ if message is not None else None
    reason = "error" if hole else FINISH_REASONS.get(turn.status, "error")
    out.append(chunks.finish(reason, metadata))
    first = max(seen, last_seq) + 1
    closing = b"".join(frame(first + i, chunk) for i, chunk in enumerate(out))
    return b"".join(missed) + closing + DONE


def _is_finish(raw: bytes) -> bool:
    """Whether an encoded frame holds the `finish` chunk."""
    _head, _, data = raw.partition(b"\ndata: ")
    return bool(orjson.loads(data).get("type") == "finish") if data else False


def turn_frames(
    state: AppState, session_id: str, turn_id: uuid.UUID, after_seq: int
) -> AsyncGenerator[bytes, None]:
    """A turn's frames after `after_seq`, wherever it runs: from its runner's memory on this
    replica, from its EventLog elsewhere, from Postgres once the log is gone."""
    heartbeat = state.settings.turns.heartbeat_s
    runner = state.turns.registry.for_session(session_id) if state.turns else None
    if runner is not None and runner.turn_id == str(turn_id) and not runner.done:
        return runner.frames_from(after_seq + 1)
    return _remote_frames(state, session_id, turn_id, after_seq, heartbeat)


async def _remote_frames(
    state: AppState, session_id: str, turn_id: uuid.UUID, after_seq: int, heartbeat_s: float
) -> AsyncGenerator[bytes, None]:
    key = state.keys.turn_events(session_id, str(turn_id))
    if await state.redis.exists(key):
        source = follow_log(state, session_id, turn_id, after_seq, heartbeat_s)
    else:
        source = follow_persisted(state, session_id, turn_id, after_seq, heartbeat_s)
    async for data in source:
        yield data
