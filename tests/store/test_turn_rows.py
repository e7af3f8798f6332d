"""The turns' own asyncpg pool."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from app.store.db import connect_args
from app.store.turn_rows import TurnRows, is_transient


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


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), True),
        (asyncpg.exceptions.AdminShutdownError("shutting down"), True),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many"), True),
        (asyncpg.exceptions.SerializationError("serialization"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.UntranslatableCharacterError("\\u0000"), False),
        (asyncpg.exceptions.DataError("invalid input for query argument"), False),
        (asyncpg.exceptions.UndefinedColumnError("no column"), False),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), False),
        (TypeError("a bug"), False),
    ],
)
def test_only_transient_database_errors_are_worth_trying_again(
    exc: BaseException, transient: bool
) -> None:
    assert is_transient(exc) is transient
