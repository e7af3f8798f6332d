"""Resume from Postgres: when a running turn's EventLog is gone, follow its persisted reply.

The reply is replayed whole once its turn ends (sending `: ping` while waiting). If the turn's
lease disappears while the reply still says "streaming", its replica died: what was persisted
is replayed with an `interrupted` error, so the client does not wait forever.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

import anyio

from app.backends.errors import MESSAGES
from app.lifespan import AppState
from app.store.messages import MessageRepository
from app.store.models import ChatMessage, Turn
from app.stream import chunks
from app.stream.replay import message_chunks
from app.stream.sse import DONE, PING, frame

FINISH_REASONS = {"completed": "stop", "failed": "error", "stopped": "other"}


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
        if not await state.redis.exists(state.keys.session_lease(session_id)):
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
        out.append(chunks.data_error("interrupted", MESSAGES["interrupted"], True))
        out.append(chunks.error(f"interrupted: {MESSAGES['interrupted']}"))
    out.append(chunks.finish(reason, (message.metadata_ if message is not None else None)))
    frames = [frame(seq, chunk) for seq, chunk in enumerate(out) if seq > after_seq]
    yield b"".join(frames) + DONE
