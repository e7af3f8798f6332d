"""The context ladder's costs: a turn's start and its database writes as a session grows, and
what a turn recovered from "prompt is too long" spends.

    uv run python bench/context.py                   # 10, 100 and 1,000 prior turns
    uv run python bench/context.py --prior 10 100    # fewer
    uv run python bench/context.py --backend claude_sdk

One `copilot fake-upstream` process (its default 200,000-token window) and one `copilot serve`
(by default the Messages API backend, whose context is the stored history; titles off) on
this machine's Postgres (a database of the run's own, dropped after it) and Redis.

Growth: for each number of prior turns P, a session is seeded with P turns (2P stored
messages of ~300 characters each, written straight into Postgres), then one turn (the first
on that history: it may compact it, whose cost it shows), then `--turns` (20) turns one
after the other. Per turn: the time to the response's headers (the
turn's start: lease, rows, the history read) and to the first text, and the bytes of
write-ahead log Postgres wrote for it (`pg_current_wal_lsn()` before and after: every row,
index and update the turn caused). Both should stay flat as P grows.

Recovery: sessions of 8 prior turns whose next call fails once with "prompt is too long"
(a queued plan of the fake); the turn compacts and answers. Per recovered turn: the upstream
calls it made (the failed one, the summary, the answer) against one for a plain turn, and
the input and output tokens billed to it against a plain turn of the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from measure import Spawned, code_version, free_port
from servers import BENCH, COPILOT, clean_env
from storage import clear_redis, create_database, database_url, drop_database

WORDS = "the quick brown fox jumps over the lazy dog while the stream keeps flowing " * 4


async def seed(db: str, session_id: str, user: str, prior: int) -> None:
    """A session with `prior` completed turns, written straight into Postgres."""
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "INSERT INTO chat_sessions (id, user_id, last_seq) VALUES ($1, $2, $3)",
            session_id,
            user,
            2 * prior,
        )
        rows = []
        for i in range(prior):
            for offset, role in ((1, "user"), (2, "assistant")):
                parts = [{"type": "text", "text": f"{role} {i}: {WORDS}"}]
                rows.append((session_id, 2 * i + offset, f"{role}-{i}", role, orjson.dumps(parts)))
        await conn.executemany(
            "INSERT INTO chat_messages (session_id, seq, message_id, role, parts) "
            "VALUES ($1, $2, $3, $4, $5::jsonb)",
            [(*r[:4], r[4].decode()) for r in rows],
        )
    finally:
        await conn.close()


async def wal_lsn(conn: asyncpg.Connection) -> int:
    """The write-ahead log's position, in bytes."""
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def turn(http: httpx.AsyncClient, sid: str, message: str) -> dict[str, Any]:
    """One turn: seconds to headers and to the first text, the text, the error if any."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"headers": None, "first": None, "text": "", "error": None}
    async with http.stream("POST", "/api/v1/chat", json={"id": sid, "message": message}) as r:
        out["headers"] = time.perf_counter() - t0
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if chunk["type"] == "text-delta":
                out["first"] = out["first"] or time.perf_counter() - t0
                out["text"] += chunk["delta"]
            elif chunk["type"] == "data-error":
                out["error"] = chunk["data"]["code"]
    return out


async def growth(url: str, db: str, user: str, prior: int, turns: int) -> dict[str, Any]:
    """Start time, first text and WAL bytes per turn in a session of `prior` turns."""
    sid = f"grow-{prior}-{uuid.uuid4().hex[:6]}"
    await seed(db, sid, user, prior)
    conn = await asyncpg.connect(db)
    starts, firsts, wal, errors = [], [], [], 0
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            opening = await turn(http, sid, "the first turn on this history")
            for i in range(turns):
                before = await wal_lsn(conn)
                result = await turn(http, sid, f"turn {i}: {WORDS}")
                wal.append(await wal_lsn(conn) - before)
                errors += result["error"] is not None
                starts.append(result["headers"])
                firsts.append(result["first"] or float("nan"))
    finally:
        await conn.close()
    return {
        "prior": prior,
        "opening_ms": 1000 * (opening["first"] or float("nan")),
        "start_ms": 1000 * statistics.median(starts),
        "first_ms": 1000 * statistics.median(firsts),
        "wal_kb": statistics.median(wal) / 1024,
        "errors": errors,
    }


async def recovery(url: str, fake: str, db: str, user: str, sessions: int) -> dict[str, Any]:
    """Upstream calls and billed tokens of turns recovered from "prompt is too long"."""
    calls: list[int] = []
    extra_in: list[int] = []
    extra_out: list[int] = []
    errors = 0
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as http,
        httpx.AsyncClient(base_url=fake, timeout=10) as admin,
    ):
        for _ in range(sessions):
            sid = f"recover-{uuid.uuid4().hex[:6]}"
            await seed(db, sid, user, 8)
            await turn(http, sid, f"a plain turn: {WORDS}")
            plain = (await http.get(f"/api/v1/sessions/{sid}/turns")).json()["turns"][-1]
            await admin.post("/_fake/reset")
            await admin.post("/_fake/script", json=[{"kind": "echo", "context": 50}])
            result = await turn(http, sid, f"a recovered turn: {WORDS}")
            errors += result["error"] is not None
            recovered = (await http.get(f"/api/v1/sessions/{sid}/turns")).json()["turns"][-1]
            made = (await admin.get("/_fake/requests")).json()
            calls.append(len([r for r in made if r["path"] == "/v1/messages"]))
            extra_in.append(_input(recovered) - _input(plain))
            extra_out.append(recovered["usage"]["output_tokens"] - plain["usage"]["output_tokens"])
    return {
        "calls": statistics.median(calls),
        "extra_input": statistics.median(extra_in),
        "extra_output": statistics.median(extra_out),
        "errors": errors,
    }


def _input(turn: dict[str, Any]) -> int:
    usage = turn["usage"]
    return int(usage["input_tokens"] + usage["cache_read_tokens"] + usage["cache_write_tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--turns", type=int, default=20, help="measured turns per session")
    parser.add_argument("--recoveries", type=int, default=5)
    parser.add_argument("--backend", choices=["anthropic", "claude_sdk"], default="anthropic")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:6]
    out = Path(tempfile.mkdtemp(prefix=f"copilot-bench-context-{run_id}-"))
    print(f"code {code_version(BENCH.parent)}; logs in {out}", flush=True)
    database, prefix, user = f"copilot_bench_{run_id}", f"copilot-bench-ctx-{run_id}", "bench"
    create_database(args.database_url, database)
    db = database_url(args.database_url, database)
    fake_port, port = free_port(), free_port()
    fake_url, url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{port}"
    fake = Spawned.start(
        "fake-upstream",
        [COPILOT, "fake-upstream", "--host", "127.0.0.1", "--port", str(fake_port)],
        clean_env(),
        out,
    )
    env = clean_env() | {
        "COPILOT_BACKEND": args.backend,
        "COPILOT_WORKSPACES_DIR": tempfile.mkdtemp(prefix="cb", dir="/tmp"),
        "DATABASE_URL": db,
        "REDIS_URL": args.redis_url,
        "COPILOT_REDIS_KEY_PREFIX": prefix,
        "ANTHROPIC_BASE_URL": fake_url,
        "ANTHROPIC_API_KEY": "bench",
        "COPILOT_TITLE_GENERATION": "0",
        "COPILOT_LOCAL_USER": user,
        "COPILOT_DATA_DIR": str(out / "data"),
    }
    argv = [COPILOT, "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = Spawned.start("copilot", argv, env, out)
    try:
        fake.wait_ready(fake_url + "/healthz")
        server.wait_ready(url + "/readyz")
        rows = [asyncio.run(growth(url, db, user, p, args.turns)) for p in args.prior]
        recovered = asyncio.run(recovery(url, fake_url, db, user, args.recoveries))
    finally:
        server.stop()
        fake.stop()
        shutil.rmtree(env["COPILOT_WORKSPACES_DIR"], ignore_errors=True)
        drop_database(args.database_url, database)
        clear_redis(args.redis_url, prefix)
    print()
    print(f"{args.backend}:")
    print("| prior turns | first turn on it: first text ms | start (headers) p50 ms "
          "| first text p50 ms | WAL per turn p50 KB | errors |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prior']:,} | {r['opening_ms']:.1f} | {r['start_ms']:.1f} "
            f"| {r['first_ms']:.1f} | {r['wal_kb']:.1f} | {r['errors']} |"
        )
    print()
    print("| recovered turns | upstream calls (plain: 1) | extra input tokens | "
          "extra output tokens | errors |")  # fmt: skip
    print("|---|---|---|---|---|")
    print(
        f"| {args.recoveries} | {recovered['calls']:g} | {recovered['extra_input']:,.0f} "
        f"| {recovered['extra_output']:,.0f} | {recovered['errors']} |"
    )


if __name__ == "__main__":
    main()
