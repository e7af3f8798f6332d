"""The turns' own asyncpg pool."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from app.store.db import connect_args
from app.store.turn_rows import StartOrder, TurnRows, is_transient


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


async def test_starts_arriving_together_share_statements_and_a_retried_one_is_refused_alone(
    database_url: str,
) -> None:
    rows = await TurnRows.open(database_url, 4, connect_args(database_url))
    try:

        def order(i: int, message_id: str | None = None) -> StartOrder:
            turn = uuid.uuid4()
            return StartOrder(
                session_id=f"batch-{turn.hex[:10]}",
                user_id="alice",
                turn_id=turn,
                user_message_id=message_id or f"u-{turn.hex}",
                user_parts=[{"type": "text", "text": f"hello {i}"}],
                user_metadata={},
                assistant_message_id=f"a-{turn.hex}",
                backend="anthropic",
                model="m",
                replica_id="r",
            )

        # A session with history, answered within a batch like any other.
        old = order(0)
        first = await rows.start(old)
        assert first is not None
        await rows.pool.execute(
            "UPDATE chat_sessions SET active_turn_id = NULL WHERE id = $1", old.session_id
        )
        again = order(1)
        again.session_id = old.session_id
        taken = order(2, message_id=old.user_message_id)  # a retried POST's message id
        taken.session_id = f"batch-{uuid.uuid4().hex[:10]}"
        await rows.pool.execute(
            "INSERT INTO chat_sessions (id, user_id) VALUES ($1, 'alice')", taken.session_id
        )
        await rows.pool.execute(
            "INSERT INTO chat_messages (session_id, seq, message_id, role, parts)"
            " VALUES ($1, 1, $2, 'user', '[]')",
            taken.session_id,
            old.user_message_id,
        )
        orders = [order(i) for i in range(3, 20)] + [again, taken]
        before = rows._starts.batches
        started = await asyncio.gather(*(rows.start(o) for o in orders))
        assert rows._starts.batches - before < len(orders)  # they shared statements
        assert started[-1] is None  # only the retried one is refused
        assert all(s is not None for s in started[:-1])
        resumed = started[-2]
        assert resumed is not None
        assert [m["role"] for m in resumed.history] == ["user", "assistant"]
        assert resumed.user_seq == 3
        fresh = started[0]
        assert fresh is not None
        assert fresh.history == []
        assert fresh.user_seq == 1
        count = await rows.pool.fetchval(
            "SELECT count(*) FROM turns WHERE id = ANY($1::uuid[])", [o.turn_id for o in orders]
        )
        assert count == len(orders) - 1
    finally:
        await rows.close()
