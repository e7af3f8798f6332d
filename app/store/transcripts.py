"""CLI transcripts in Postgres: the SDK's `SessionStore` over `transcript_entries`.

The SDK keys a transcript by `(project_key, session_id)`, where the project key comes from the
CLI's working directory and the session id is the CLI's own UUID. Neither is ours to rely on:
another replica has another workspace root (another project key), and a session that had to
start afresh has a new CLI id. So a store is *bound* to one of our sessions and one generation
(`PostgresTranscripts.bind`): it ignores the key, except that subagent transcripts (a key with
a `subpath`) are not kept (resume only needs the main transcript, which holds each subagent's
result).

Rows are append-only per `(session_id, generation)`, numbered by `seq` from 1. A new generation
starts whenever a session starts a fresh CLI session (its transcript was missing or unreadable,
or the context ladder rebuilt it); `load` returns the newest generation only. A turn appends only
its new entries (the SDK mirrors once per turn, before it hands over the `ResultMessage`), in
one statement whatever their number, so a turn's writes grow with the turn, not the history.

An attempt that ends with `prompt_too_long` is rolled back (`roll_back`): its entries (the
message that did not fit, the CLI's failed compactions) would make every later resume fail
the same way.

`TranscriptPosition` (generation, last seq) is what a warm CLI process last saw: the backend
compares it with `position()` before reusing the process, so a turn answered on another replica
in between is never missed.

The statements run on the turns' own asyncpg pool (`app.store.turn_rows`), in autocommit:
one more pool per replica would buy nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
from claude_agent_sdk.types import SessionKey, SessionStoreEntry

log = logging.getLogger(__name__)

_APPEND = """
WITH base AS (
    SELECT coalesce(max(seq), 0) AS last FROM transcript_entries
    WHERE session_id = $1 AND generation = $2
), inserted AS (
    INSERT INTO transcript_entries (session_id, generation, seq, entry)
    SELECT $1, $2, base.last + e.ordinality, e.value
    FROM base, jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(value, ordinality)
    RETURNING seq
)
SELECT coalesce(max(seq), (SELECT last FROM base)) FROM inserted
"""
_LOAD = """
SELECT entry FROM transcript_entries WHERE session_id = $1 AND generation = $2 ORDER BY seq
"""
_POSITION = """
SELECT generation, max(seq) AS last_seq,
       (array_agg(entry->>'sessionId' ORDER BY seq)
            FILTER (WHERE entry ? 'sessionId'))[1] AS cli_session_id
FROM transcript_entries
WHERE session_id = $1 AND generation = (
    SELECT max(generation) FROM transcript_entries WHERE session_id = $1
)
GROUP BY generation
"""
_DELETE = "DELETE FROM transcript_entries WHERE session_id = $1"
_ROLL_BACK = """
DELETE FROM transcript_entries
WHERE session_id = $1 AND (generation > $2 OR (generation = $2 AND seq > $3))
"""


@dataclass(frozen=True, slots=True)
class TranscriptPosition:
    """Where a session's stored transcript ends: its newest generation and last entry."""

    generation: int
    last_seq: int
    cli_session_id: str | None = None


class SessionTranscript:
    """A `SessionStore` bound to one of our sessions and one generation."""

    def __init__(self, pool: asyncpg.Pool, session_id: str, generation: int, last_seq: int) -> None:
        self._pool = pool
        self.session_id = session_id
        self.generation = generation
        # The last entry this store wrote or read: what the CLI process using it has seen.
        self.last_seq = last_seq

    @property
    def position(self) -> TranscriptPosition:
        """What the CLI process using this store has seen of the transcript."""
        return TranscriptPosition(self.generation, self.last_seq)

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        """Append the entries of a turn (subagent transcripts are not kept)."""
        if key.get("subpath") or not entries:
            return
        last = await self._pool.fetchval(_APPEND, self.session_id, self.generation, entries)
        self.last_seq = int(last)

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        """The bound generation's entries, oldest first (None when there are none)."""
        if key.get("subpath"):
            return None
        rows = await self._pool.fetch(_LOAD, self.session_id, self.generation)
        if not rows:
            return None
        self.last_seq = len(rows)
        return [row["entry"] for row in rows]


class PostgresTranscripts:
    """Every session's CLI transcripts, on the turns' asyncpg pool (`TurnRows.pool`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    def bind(self, session_id: str, position: TranscriptPosition | None) -> SessionTranscript:
        """A `SessionStore` for `session_id`: the generation at `position` (its entries up to
        `last_seq` already seen), or generation 0 when the session has none."""
        if position is None:
            return SessionTranscript(self.pool, session_id, 0, 0)
        return SessionTranscript(self.pool, session_id, position.generation, position.last_seq)

    def fresh(self, session_id: str, previous: TranscriptPosition | None) -> SessionTranscript:
        """A `SessionStore` that starts a new generation after `previous`."""
        generation = 0 if previous is None else previous.generation + 1
        return SessionTranscript(self.pool, session_id, generation, 0)

    async def position(self, session_id: str) -> TranscriptPosition | None:
        """Where the session's newest generation ends (None: no transcript stored)."""
        row = await self.pool.fetchrow(_POSITION, session_id)
        if row is None:
            return None
        return TranscriptPosition(row["generation"], row["last_seq"], row["cli_session_id"])

    async def delete(self, session_id: str) -> None:
        """Remove every generation of the session's transcript."""
        await self.pool.execute(_DELETE, session_id)

    async def roll_back(self, session_id: str, to: TranscriptPosition) -> None:
        """Remove what was stored after `to`: the entries a failed attempt appended (and a
        generation it started), so that the next turn resumes from before it."""
        await self.pool.execute(_ROLL_BACK, session_id, to.generation, to.last_seq)
