"""The Postgres and Redis side of bench/relay.py: the bench database, the persistence check,
and removing the keys a run left in Redis. Loopback services only.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import redis


def database_url(admin_url: str, name: str) -> str:
    """`admin_url` pointing at database `name` instead."""
    return urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def create_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE `name` (copilot serve migrates it when it starts)."""
    asyncio.run(_admin(admin_url, f'create database "{name}"'))


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE `name`, closing whatever is still connected to it."""
    asyncio.run(_admin(admin_url, f'drop database if exists "{name}" with (force)'))


async def _persisted(url: str, like: str, n: int, tokens: int) -> tuple[int, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = await conn.fetchval(
                "select count(*) from turns where status = 'running' and session_id like $1", like
            )
            if not running:
                break
            await asyncio.sleep(0.2)
        rows = await conn.fetch(
            """select m.session_id, m.status, m.parts, t.status as turn_status
               from chat_messages m left join turns t on t.assistant_message_id = m.message_id
               where m.role = 'assistant' and m.session_id like $1""",
            like,
        )
    finally:
        await conn.close()
    good, problems = 0, list[str]()
    for row in rows:
        parts = orjson.loads(row["parts"]) if isinstance(row["parts"], str) else row["parts"]
        words = len("".join(p.get("text", "") for p in parts if p.get("type") == "text").split())
        if row["status"] == "complete" and row["turn_status"] == "completed" and words == tokens:
            good += 1
        elif len(problems) < 5:
            problems.append(
                f"{row['session_id']}: message {row['status']}, "
                f"turn {row['turn_status']}, {words} words"
            )
    if len(rows) < n:
        problems.append(f"{n - len(rows)} of {n} assistant messages missing")
    return good, problems


def persisted_replies(url: str, session_prefix: str, n: int, tokens: int) -> tuple[int, list[str]]:
    """How many of the sessions `<prefix>-0 .. -(n-1)` hold a `complete` assistant message
    of exactly `tokens` words whose turn is `completed`, and samples of what is wrong.
    Waits (up to a minute) for turns still running first."""
    return asyncio.run(_persisted(url, session_prefix + "-%", n, tokens))


async def _titled(url: str, like: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count = await conn.fetchval(
            "select count(*) from chat_sessions where id like $1 and title is not null", like
        )
    finally:
        await conn.close()
    return int(count)


def titled_sessions(url: str, session_prefix: str) -> int:
    """How many of the sessions `<prefix>-*` have a title."""
    return asyncio.run(_titled(url, session_prefix + "-%"))


def wait_for_titles(
    url: str, session_prefix: str, n: int, cap_s: float, stall_s: float = 5.0
) -> int:
    """Wait until the `n` sessions `<prefix>-*` all have a title, or none came for `stall_s`
    (the rest failed), or `cap_s` passed; return how many have one."""
    deadline = time.monotonic() + cap_s
    count, last, progress = 0, -1, time.monotonic()
    while True:
        count = titled_sessions(url, session_prefix)
        now = time.monotonic()
        if count != last:
            last, progress = count, now
        if count >= n or now >= deadline or now - progress >= stall_s:
            return count
        time.sleep(0.25)


def clear_redis(url: str, key_prefix: str, limit: int = 1_000_000) -> int:
    """Delete the keys under `key_prefix` (at most `limit`); return how many."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{key_prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.delete(*batch)
                batch.clear()
            if deleted + len(batch) >= limit:
                break
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted
