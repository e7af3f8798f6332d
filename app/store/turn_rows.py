"""The hot path of a turn in Postgres: one statement to start it, one per flush, one to end it.

Postgres is the fence (design.md §7): a turn's partial and final writes apply as written only
while it is still its session's active turn. One that lost its session (its lease expired
and another turn took over) still stores its own reply and usage, marked `interrupted`, and
never touches the session's active turn.

Each is a single statement run in autocommit (atomic, with no BEGIN/COMMIT round trips), so a
turn costs three kinds of round trip whatever its length. They run on a small asyncpg pool of
their own, without SQLAlchemy: the benchmark showed its per-statement work was a visible part of
a turn's CPU. Anything unusual (a retried message
id, another user's session, a leftover active turn) makes the start statement do nothing, and
the caller takes the general path (`app.turns.start`), which explains itself with a status.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from app.coord.batching import Coalescer
from app.store.compactions import summary_message
from app.store.usage import Usage

# The session's newest compaction and the sequence number of the last message it covers: a
# turn's history starts after it (`app.store.compactions`).
_COMPACTION = """compaction AS (
    SELECT c.id, c.summary, coalesce(t.seq, 0) AS through_seq
    FROM context_compactions c
    LEFT JOIN chat_messages t ON t.session_id = c.session_id
        AND t.message_id = c.through_message_id
    WHERE c.session_id = $1 ORDER BY c.id DESC LIMIT 1
)"""

_START = (
    """
WITH sess AS (
    INSERT INTO chat_sessions AS s (id, user_id, last_seq, active_turn_id)
    VALUES ($1, $2, 2, $3::uuid)
    ON CONFLICT (id) DO UPDATE
        SET last_seq = s.last_seq + 2, active_turn_id = $3::uuid, updated_at = now()
        WHERE s.user_id = $2 AND s.active_turn_id IS NULL
            AND NOT EXISTS (SELECT 1 FROM queued_messages q
                            WHERE q.session_id = $1 AND q.status = 'queued')
    RETURNING s.last_seq, s.title
), user_message AS (
    INSERT INTO chat_messages (session_id, seq, message_id, role, parts, metadata, status, turn_id)
    SELECT $1, last_seq - 1, $4, 'user', $5::jsonb, $6::jsonb, 'complete', $3::uuid
    FROM sess
), assistant_message AS (
    INSERT INTO chat_messages (session_id, seq, message_id, role, parts, metadata, status, turn_id)
    SELECT $1, last_seq, $7, 'assistant', '[]', '{}', 'streaming', $3::uuid
    FROM sess
), turn AS (
    INSERT INTO turns (id, session_id, user_message_id, assistant_message_id, trigger, status,
                       backend, model, replica_id)
    SELECT $3::uuid, $1, $4, $7, 'submit-message', 'running', $8, $9, $10
    FROM sess
), """
    + _COMPACTION
    + """
SELECT sess.title, sess.last_seq, compaction.id AS compaction_id, compaction.summary,
       m.message_id, m.role, m.parts, m.metadata, m.created_at
FROM sess
LEFT JOIN compaction ON true
LEFT JOIN chat_messages m ON m.session_id = $1 AND m.superseded_at IS NULL
    AND m.seq > coalesce(compaction.through_seq, 0)
    AND ($11::int IS NULL OR m.seq > sess.last_seq - 2 - $11::int)
ORDER BY m.seq
"""
)

# `_START` for several new turns at once (of different sessions: each holds its session's
# lease), sent when starts arrive while another start statement is in flight
# (`TurnRows.start`). $1: the turns (JSON records); $2-$4: backend, model, replica; $5: the
# history limit. Rows as `_START`'s, with the session id first.
_START_MANY = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS i(
        session_id text, user_id text, turn_id uuid, user_message_id text, user_parts jsonb,
        user_metadata jsonb, assistant_message_id text)
), sess AS (
    INSERT INTO chat_sessions AS s (id, user_id, last_seq, active_turn_id)
    SELECT session_id, user_id, 2, turn_id FROM input
    ON CONFLICT (id) DO UPDATE
        SET last_seq = s.last_seq + 2, active_turn_id = EXCLUDED.active_turn_id,
            updated_at = now()
        WHERE s.user_id = EXCLUDED.user_id AND s.active_turn_id IS NULL
            AND NOT EXISTS (SELECT 1 FROM queued_messages q
                            WHERE q.session_id = s.id AND q.status = 'queued')
    RETURNING s.id, s.last_seq, s.title
), started AS (
    SELECT input.*, sess.last_seq, sess.title FROM input JOIN sess ON sess.id = input.session_id
), user_message AS (
    INSERT INTO chat_messages (session_id, seq, message_id, role, parts, metadata, status, turn_id)
    SELECT session_id, last_seq - 1, user_message_id, 'user', user_parts, user_metadata,
           'complete', turn_id
    FROM started
), assistant_message AS (
    INSERT INTO chat_messages (session_id, seq, message_id, role, parts, metadata, status, turn_id)
    SELECT session_id, last_seq, assistant_message_id, 'assistant', '[]', '{}', 'streaming',
           turn_id
    FROM started
), turn AS (
    INSERT INTO turns (id, session_id, user_message_id, assistant_message_id, trigger, status,
                       backend, model, replica_id)
    SELECT turn_id, session_id, user_message_id, assistant_message_id, 'submit-message',
           'running', $2, $3, $4
    FROM started
)
SELECT started.session_id, started.title, started.last_seq, compaction.id AS compaction_id,
       compaction.summary, m.message_id, m.role, m.parts, m.metadata, m.created_at
FROM started
LEFT JOIN LATERAL (
    SELECT c.id, c.summary, coalesce(t.seq, 0) AS through_seq
    FROM context_compactions c
    LEFT JOIN chat_messages t ON t.session_id = c.session_id
        AND t.message_id = c.through_message_id
    WHERE c.session_id = started.session_id ORDER BY c.id DESC LIMIT 1
) AS compaction ON true
LEFT JOIN chat_messages m ON m.session_id = started.session_id AND m.superseded_at IS NULL
    AND m.seq > coalesce(compaction.through_seq, 0)
    AND ($5::int IS NULL OR m.seq > started.last_seq - 2 - $5::int)
ORDER BY started.session_id, m.seq
"""

# The history a turn is answered from, up to its user message (seq $2): the newest
# compaction's summary, then the messages after it.
_HISTORY = (
    """
WITH """
    + _COMPACTION
    + """
SELECT compaction.id AS compaction_id, compaction.summary,
       m.message_id, m.role, m.parts, m.metadata, m.created_at
FROM (SELECT 1) AS one
LEFT JOIN compaction ON true
LEFT JOIN chat_messages m ON m.session_id = $1 AND m.superseded_at IS NULL
    AND m.seq > coalesce(compaction.through_seq, 0) AND m.seq <= $2
ORDER BY m.seq
"""
)

_OWNERS = "SELECT id, user_id, on_conflict FROM chat_sessions WHERE id = ANY($1::text[])"
_ACTIVE = "SELECT active_turn_id FROM chat_sessions WHERE id = $1"

_PARTIALS = """
UPDATE chat_messages AS m SET parts = r.parts, updated_at = now()
FROM jsonb_to_recordset($1::jsonb) AS r(session_id text, message_id text, parts jsonb)
WHERE m.session_id = r.session_id AND m.message_id = r.message_id AND m.status = 'streaming'
    AND EXISTS (SELECT 1 FROM chat_sessions s
                WHERE s.id = m.session_id AND s.active_turn_id = m.turn_id)
"""

_FINISH = """
WITH fence AS (
    SELECT coalesce(bool_or(active_turn_id = $2::uuid), false) AS current
    FROM chat_sessions WHERE id = $1
), reply AS (
    UPDATE chat_messages SET parts = $4::jsonb,
        status = CASE WHEN (SELECT current FROM fence) THEN $5 ELSE 'interrupted' END,
        metadata = $6::jsonb, updated_at = now()
    WHERE session_id = $1 AND message_id = $3 AND status = 'streaming'
), turn AS (
    UPDATE turns SET
        status = CASE WHEN (SELECT current FROM fence) THEN $7 ELSE 'interrupted' END,
        finish_reason = $8, error_code = $9, error_message = $10,
        attempts = $11, first_token_at = $13, finished_at = $14, ttft_ms = $15,
        duration_ms = $16, input_tokens = $17, output_tokens = $18, cache_read_tokens = $19,
        cache_write_tokens = $20, cost_usd = $21, context_rung = $22, trace_id = $23
    WHERE id = $2::uuid AND finished_at IS NULL
    RETURNING id
), late AS (
    -- A turn reaped while its replica was merely slow: what the reaper stored stands, but
    -- the tokens it spent are the truth of the cost (counted once: they were zero).
    UPDATE turns SET input_tokens = $17, output_tokens = $18, cache_read_tokens = $19,
        cache_write_tokens = $20, cost_usd = $21
    WHERE id = $2::uuid AND reaped_by IS NOT NULL
        AND input_tokens = 0 AND output_tokens = 0 AND cost_usd = 0
    RETURNING id
), attempt_rows AS (
    INSERT INTO turn_attempts (turn_id, number, context_rung, started_at, finished_at, error_code,
                               reason, tokens_before, tokens_after, input_tokens, output_tokens)
    SELECT turn.id, a.number, a.context_rung, a.started_at, a.finished_at, a.error_code,
           a.reason, a.tokens_before, a.tokens_after, a.input_tokens, a.output_tokens
    FROM turn, jsonb_to_recordset($12::jsonb) AS a(
        number int, context_rung int, started_at timestamptz, finished_at timestamptz,
        error_code text, reason text, tokens_before int, tokens_after int, input_tokens int,
        output_tokens int)
)
UPDATE chat_sessions SET
    input_tokens = input_tokens + $17, output_tokens = output_tokens + $18,
    cache_read_tokens = cache_read_tokens + $19, cache_write_tokens = cache_write_tokens + $20,
    cost_usd = cost_usd + $21,
    active_turn_id = CASE WHEN active_turn_id = $2::uuid THEN NULL ELSE active_turn_id END
WHERE id = $1 AND EXISTS (SELECT 1 FROM turn UNION ALL SELECT 1 FROM late)
RETURNING (SELECT count(*) FROM queued_messages q WHERE q.session_id = $1 AND q.status = 'queued')
"""

# Every turn one of the given replicas is running, as Postgres has it (`ix_turns_status`).
_RUNNING = """
SELECT session_id, id FROM turns
WHERE status = 'running' AND finished_at IS NULL AND replica_id = ANY($1::text[])
"""

# Records a turn whose replica died as interrupted, once: of two reapers (or a reaper and the
# late final write of a replica that was only slow) the first to lock the turn row wins.
# $3: the reply rebuilt from the EventLog (NULL: keep the stored partial reply); $4: the
# parts that close it (the `data-error`).
_REAP = """
WITH turn AS (
    UPDATE turns SET status = 'interrupted', finish_reason = 'error',
        error_code = 'interrupted', error_message = $5, reaped_by = $6, finished_at = now(),
        duration_ms = (extract(epoch FROM now() - started_at) * 1000)::int
    WHERE id = $2::uuid AND session_id = $1 AND finished_at IS NULL
    RETURNING id, assistant_message_id, model
), reply AS (
    UPDATE chat_messages m SET parts = (
            -- the reply rebuilt from the EventLog, unless the last partial write holds more
            -- (a Redis failover can lose the log's newest frames)
            CASE WHEN $3::jsonb IS NOT NULL AND length($3::jsonb::text) >= length(m.parts::text)
                 THEN $3::jsonb ELSE m.parts END
        ) || $4::jsonb,
        status = 'interrupted', updated_at = now(),
        metadata = m.metadata || jsonb_build_object(
            'turnId', turn.id::text, 'model', turn.model, 'finishReason', 'error')
    FROM turn
    WHERE m.session_id = $1 AND m.message_id = turn.assistant_message_id
        AND m.status = 'streaming'
    RETURNING m.metadata
), sess AS (
    UPDATE chat_sessions SET active_turn_id = NULL, updated_at = now()
    WHERE id = $1 AND active_turn_id = $2::uuid AND EXISTS (SELECT 1 FROM turn)
)
SELECT turn.assistant_message_id, turn.model, reply.metadata
FROM turn LEFT JOIN reply ON true
"""


# SQLSTATE classes worth trying again: connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources (too many connections), operator
# intervention (shutting down, starting up). Anything else (a value the database refuses, a
# bug) fails the same way every time.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57"})


def is_transient(exc: BaseException) -> bool:
    """Whether a statement that raised `exc` may succeed if sent again."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _TRANSIENT_CLASSES
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return False
    # The connection broke or timed out, or the pool is closing or busy.
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError)


@dataclass(slots=True)
class StartOrder:
    """A new turn's first rows, for the start statement."""

    session_id: str
    user_id: str
    turn_id: uuid.UUID
    user_message_id: str
    user_parts: list[dict[str, Any]]
    user_metadata: dict[str, Any]
    assistant_message_id: str
    backend: str
    model: str
    replica_id: str
    history_limit: int | None = None


@dataclass(slots=True)
class StartedTurn:
    """What the start statement gives back: the session title, the history before the turn
    (its newest messages only, when a limit was asked for) and the turn's user message's
    sequence number."""

    title: str | None
    history: list[dict[str, Any]]
    user_seq: int = 0


@dataclass
class TurnEnd:
    """Everything the final statement stores."""

    session_id: str
    turn_id: uuid.UUID
    message_id: str
    parts: list[dict[str, Any]]
    message_status: str
    metadata: dict[str, Any]
    status: str
    finish_reason: str
    error_code: str | None
    error_message: str | None
    attempt_log: list[dict[str, Any]]
    first_token_at: datetime | None
    finished_at: datetime
    ttft_ms: int | None
    duration_ms: int
    usage: Usage
    cost: Decimal
    trace_id: str | None = None


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("jsonb", "json"):
        await conn.set_type_codec(
            kind, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog", format="text"
        )
    # Prepare the three statements into the connection's statement cache now (the pool warms
    # up at start-up), not under the first burst of turns.
    for statement in (_OWNERS, _START, _PARTIALS, _FINISH):
        with contextlib.suppress(asyncpg.PostgresError, AttributeError):
            await conn._prepare(statement, use_cache=True)
    # A prepare ends without a Sync: the server keeps its transaction open (and its table
    # locks, and `now()`) until the next statement. End it here, since the pool does not
    # reset connections (`_keep_session`).
    await conn.fetchval("SELECT 1")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query when a connection goes back to the pool: these statements leave no
    session state (no SET, LISTEN, cursor or advisory lock), and asyncpg still rolls back a
    transaction left open. The default reset is one more round trip per statement."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class TurnRows:
    """The turn hot path's own small asyncpg pool and its three statements."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._warming: asyncio.Task[None] | None = None
        self._starts = Coalescer(self._start_batch)
        self._owners = Coalescer(self._owner_batch)

    def warm_up(self, size: int) -> None:
        """Open the pool's connections in the background (a burst of new turns would otherwise
        pay for connecting and codec set-up); a database that is down is simply not warmed."""

        async def warm() -> None:
            held: list[asyncpg.pool.PoolConnectionProxy[Any]] = []
            try:
                for _ in range(size):
                    held.append(await self.pool.acquire())
            except Exception:
                pass
            finally:
                for conn in held:
                    await self.pool.release(conn)

        self._warming = asyncio.create_task(warm())

    @classmethod
    async def open(cls, url: str, size: int, connect_args: dict[str, Any]) -> TurnRows:
        """A pool of `size` connections to the database at `url` (an SQLAlchemy URL)."""
        pool = await asyncpg.create_pool(
            _asyncpg_dsn(url),
            min_size=0,
            max_size=size,
            init=_init_connection,
            reset=_keep_session,
            **connect_args,
        )
        assert pool is not None
        rows = cls(pool)
        rows.warm_up(size)
        return rows

    async def close(self) -> None:
        """Close every connection."""
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(BaseException):
                await self._warming
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except TimeoutError:
            self.pool.terminate()

    async def start(self, order: StartOrder) -> StartedTurn | None:
        """Create the session if new, store the user message, the empty reply and the turn.

        The history comes back whole (from the newest compaction on), or only its newest
        `history_limit` messages (`history` loads the rest when it is needed). None when the
        common case does not apply; then nothing was written. Starts that arrive while a
        start statement is in flight go together in the next one (`_START_MANY`).
        """
        return await self._starts(order)

    async def _start_batch(
        self, orders: list[StartOrder]
    ) -> list[StartedTurn | None | BaseException]:
        shared = {(o.backend, o.model, o.replica_id, o.history_limit) for o in orders}
        sessions = {o.session_id for o in orders}
        if len(orders) == 1 or len(shared) > 1 or len(sessions) < len(orders):
            return await self._start_each(orders)
        first = orders[0]
        records = [
            {
                "session_id": o.session_id,
                "user_id": o.user_id,
                "turn_id": str(o.turn_id),
                "user_message_id": o.user_message_id,
                "user_parts": o.user_parts,
                "user_metadata": o.user_metadata,
                "assistant_message_id": o.assistant_message_id,
            }
            for o in orders
        ]
        try:
            rows = await self.pool.fetch(
                _START_MANY,
                records,
                first.backend,
                first.model,
                first.replica_id,
                first.history_limit,
            )
        except asyncpg.UniqueViolationError:
            # One of them is a retried POST: each on its own, so that only it is refused.
            return await self._start_each(orders)
        by_session: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            by_session.setdefault(row["session_id"], []).append(row)
        answers: list[StartedTurn | None | BaseException] = []
        for o in orders:
            mine = by_session.get(o.session_id)
            answers.append(
                StartedTurn(mine[0]["title"], _ui_history(mine), mine[0]["last_seq"] - 1)
                if mine
                else None
            )
        return answers

    async def _start_each(
        self, orders: list[StartOrder]
    ) -> list[StartedTurn | None | BaseException]:
        return list(
            await asyncio.gather(*(self._start_one(o) for o in orders), return_exceptions=True)
        )

    async def _start_one(self, o: StartOrder) -> StartedTurn | None:
        try:
            rows = await self.pool.fetch(
                _START,
                o.session_id,
                o.user_id,
                o.turn_id,
                o.user_message_id,
                o.user_parts,
                o.user_metadata,
                o.assistant_message_id,
                o.backend,
                o.model,
                o.replica_id,
                o.history_limit,
            )
        except asyncpg.UniqueViolationError:
            return None  # the message id is taken: a retried POST
        if not rows:
            return None
        return StartedTurn(rows[0]["title"], _ui_history(rows), rows[0]["last_seq"] - 1)

    async def history(self, session_id: str, through_seq: int) -> list[dict[str, Any]]:
        """The session's history up to the message `through_seq`, from the newest compaction
        on (its summary first)."""
        return _ui_history(await self.pool.fetch(_HISTORY, session_id, through_seq))

    async def session_owner(self, session_id: str) -> tuple[str | None, str | None]:
        """The user who owns the session (None when no session has this id) and the
        session's `on_conflict` policy (None: the server's). Asked while another such
        question is in flight, it goes with the others in the next one."""
        return await self._owners(session_id)

    async def _owner_batch(
        self, session_ids: list[str]
    ) -> list[tuple[str | None, str | None] | BaseException]:
        rows = await self.pool.fetch(_OWNERS, list(set(session_ids)))
        found = {row["id"]: (row["user_id"], row["on_conflict"]) for row in rows}
        return [found.get(session_id, (None, None)) for session_id in session_ids]

    async def active_turn(self, session_id: str) -> uuid.UUID | None:
        """The session's active turn, as the database has it."""
        active: uuid.UUID | None = await self.pool.fetchval(_ACTIVE, session_id)
        return active

    async def running_turns(self, replicas: list[str]) -> list[tuple[str, uuid.UUID]]:
        """(session id, turn id) of every turn recorded as running on one of `replicas`."""
        if not replicas:
            return []
        rows = await self.pool.fetch(_RUNNING, replicas)
        return [(row["session_id"], row["id"]) for row in rows]

    async def reap(
        self,
        session_id: str,
        turn_id: uuid.UUID,
        *,
        parts: list[dict[str, Any]] | None,
        closing: list[dict[str, Any]],
        detail: str,
        reaped_by: str,
    ) -> Reaped | None:
        """Record a turn whose replica died as interrupted: the reply (`parts`, else what
        was stored) followed by `closing`, the turn, and the session freed. None when the
        turn had already ended, or another replica reaped it first."""
        row = await self.pool.fetchrow(
            _REAP, session_id, turn_id, parts, closing, detail, reaped_by
        )
        if row is None:
            return None
        return Reaped(row["assistant_message_id"], row["model"], row["metadata"] or {})

    async def write_partials(self, replies: list[dict[str, Any]]) -> None:
        """Store streaming replies as they stand (`{session_id, message_id, parts}` each)."""
        await self.pool.execute(_PARTIALS, replies)

    async def finish(self, end: TurnEnd) -> int:
        """Store the reply, the turn and its attempts, and the session totals, atomically;
        how many messages wait in the session's queue.

        Safe to repeat: a turn already finished is not counted twice.
        """
        usage = end.usage
        waiting: int | None = await self.pool.fetchval(
            _FINISH,
            end.session_id,
            end.turn_id,
            end.message_id,
            end.parts,
            end.message_status,
            end.metadata,
            end.status,
            end.finish_reason,
            end.error_code,
            end.error_message,
            len(end.attempt_log),
            orjson.loads(orjson.dumps(end.attempt_log)),
            end.first_token_at,
            end.finished_at,
            end.ttft_ms,
            end.duration_ms,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            end.cost,
            max((a["context_rung"] for a in end.attempt_log), default=1),
            end.trace_id,
        )
        return waiting or 0


@dataclass(frozen=True)
class Reaped:
    """What `TurnRows.reap` recorded: the reply's id, the turn's model, the reply's metadata."""

    message_id: str
    model: str
    metadata: dict[str, Any]


def _ui_history(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Rows of a history statement as UIMessages, the compaction's summary first."""
    if not rows:
        return []
    opening = []
    if rows[0]["compaction_id"] is not None:
        opening.append(summary_message(rows[0]["compaction_id"], rows[0]["summary"]))
    return [
        *opening,
        *(
            {
                "id": row["message_id"],
                "role": row["role"],
                "parts": row["parts"],
                "metadata": {**(row["metadata"] or {}), "createdAt": row["created_at"].isoformat()},
            }
            for row in rows
            if row["message_id"] is not None
        ),
    ]
