"""The turns' own asyncpg pool."""

from __future__ import annotations

import asyncio

import asyncpg

from app.store.db import connect_args
from app.store.turn_rows import TurnRows


async def test_warmed_up_connections_hold_no_transaction_open(database_url: str) -> None:
    # Regression: a connection whose warm-up ended with a prepare stayed inside that
    # transaction (table locks held, a stale `now()` for the turn rows) until its first use.
    rows = await TurnRows.open(database_url, 3, connect_args(database_url))
    try:
        assert rows._warming is not None
        await asyncio.wait_for(rows._warming, 10)
        pids = [holder._con.get_server_pid() for holder in rows.pool._holders if holder._con]
        assert len(pids) == 3
        observer = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            busy = await observer.fetch(
                "SELECT pid, state, query FROM pg_stat_activity WHERE pid = ANY($1::int[])"
                " AND (state <> 'idle' OR xact_start IS NOT NULL)",
                pids,
            )
        finally:
            await observer.close()
        assert busy == []
    finally:
        await rows.close()
