"""Two replicas under N live streams: how long the clients of a SIGKILLed replica wait for the
end of their streams, and what the reaper costs when nothing is orphaned.

    uv run python bench/fleet.py                 # N = 200: about 1.5 min on 2 cores
    uv run python bench/fleet.py --quick         # smoke run (N = 20), about 40 s
    uv run python bench/fleet.py --lease-ttl 30 --reap-interval 5 --tokens 1400   # production

Processes: one `copilot fake-upstream`, two `copilot serve` (A and B) on one bench database
(created for the run, dropped after it) and this machine's Redis under one key prefix, with
distinct `COPILOT_REPLICA_ID`s, the Messages API backend, titles off and no drain. The fleet
settings default to `COPILOT_LEASE_TTL_S=5` and `COPILOT_REAP_INTERVAL_S=1`, shortened from
production's 30 s and 5 s so that a run is short (`--lease-ttl`, `--reap-interval`); a turn of
a dead replica should be closed within TTL + interval x 1.2 (the jitter) + ~1 s (the reap,
the EventLog's flush, the reader's wake-up): that bound is printed with the settings.

The clients (`bench/fleet_clients.py`, a process of its own: raw HTTP/1.1 on asyncio, one
connection per stream) POST N new chats at once, half to A and half to B, each a long turn
(`--tokens` at `--rate` tokens/s: 800 at 20/s, 40 s). Once every stream has received text:

Part 2, the reaper's cost, nothing orphaned (measured first, while all N turns run):
- The replicas' own sweeps over a `--window` (10 s): the difference of their /metrics
  `copilot_reaper_sweep_seconds` (`_count`, `_sum`, buckets) at its two ends: sweeps per
  replica and the sweep's wall time (mean; p99 as the histogram bucket that holds it). A
  replica's sweep skips the turns it runs itself (it checks the other replica's N/2 leases).
- Then `--sweeps` (500) periods run in this process, back to back (within `--sweep-budget`,
  8 s with the idle blocks), by a `Reaper` built as a
  replica builds it (the real `TurnRows` on a pool of one connection, the replicas' Redis
  client, `Keys` of the same prefix, an empty `TurnRegistry`, an idle `EventLogWriter`; it
  announces itself as replica `bench-sweeper`). A period is what a replica does once per
  interval: `announce()` then `sweep()`. Its registry is empty, so it checks all N leases:
  the upper bound of a replica whose peers run every turn. Per period: wall time (p50,
  p99); CPU of this process (`time.process_time()` around each call); CPU of its Postgres
  backend (the one connection's pid, over all periods / periods); CPU of redis-server, which
  the replicas share: 10 blocks of sweeping against as many blocks of the same length
  without, alternated, the difference over the periods (its noise is the replicas' own
  Redis work); both from the kernel's per-thread schedstat, in nanoseconds. Round trips of
  one period, counted by wrapping the clients: Redis commands or pipelines sent (announce's
  script; the sweep's fleet script and its `EXISTS` pipeline) and Postgres statements (the
  running turns). Per minute: the per-period figures times the periods a replica runs in a
  minute at the production interval (5 s: 12) and at the bench's; share of one core = CPU
  ms per minute / 60,000.

Part 1, orphan recovery: A gets SIGKILL. Each of A's clients sees its connection end (the
kernel closes a killed process's sockets), and, as an app would, asks B for the rest of its
stream at once with `Last-Event-ID` (`--no-last-event-id`: without, and the turn is replayed
from its start and the message rebuilt from the replay alone, as the AI SDK does) and reads
until `finish` + `[DONE]`. Per orphaned client: time from the SIGKILL to its `finish` chunk
(p50, p99, max), whether the stream carried `data-error` code `interrupted`, whether it
never ended within `--timeout` (should be 0), and whether the stream it saw over both
connections is well formed (ids contiguous across the resume, every text part ended, steps
balanced, one `finish`, last). After every turn ended, in SQL: each orphaned turn
`interrupted` with `reaped_by` = B, its reply `interrupted` ending with a `data-error` part,
whose text equals what the client saw; every session's `active_turn_id` NULL; B's own N/2
streams complete (all text, finish `stop`) and persisted (`completed`, every word).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import psutil
from measure import Spawned, code_version, free_port, redis_server
from relay import percentile
from servers import BENCH, COPILOT, Bench, clean_env, copilot_env, warm_up
from storage import clear_redis, create_database, drop_database, persisted_replies

from app.config import RedisSettings
from app.coord.redis import Keys, create_redis
from app.store.db import connect_args
from app.store.turn_rows import TurnRows
from app.stream.eventlog import EventLogWriter
from app.turns.reaper import JITTER, Reaper
from app.turns.registry import TurnRegistry

PRODUCTION_INTERVAL_S = 5.0
SWEEPER_ID = "bench-sweeper"
REDIS_BLOCKS = 10


# ---------------------------------------------------------------- processes


def start_fleet(bench: Bench, logs: Path, procs: list[Spawned]) -> tuple[Spawned, str, str]:
    """The fake upstream and replicas A and B (A first: it migrates the database); replica
    A's process and both URLs once they answer."""
    args = bench.args
    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    argv = [COPILOT, "fake-upstream", "--host", "127.0.0.1", "--port", str(fake_port)]
    fake = Spawned.start("fake-upstream", argv, bench.app_env, logs, cwd=args.app_dir)
    procs.append(fake)
    fake.wait_ready(fake_url + "/healthz")
    fleet = {
        "COPILOT_LEASE_TTL_S": f"{args.lease_ttl:g}",
        "COPILOT_REAP_INTERVAL_S": f"{args.reap_interval:g}",
        "COPILOT_DRAIN_S": "0",
    }
    urls = []
    for name in ("a", "b"):
        port = free_port()
        env = {**fleet, **copilot_env(bench, fake_url), "COPILOT_REPLICA_ID": replica_id(name)}
        argv = [COPILOT, "serve", "--host", "127.0.0.1", "--port", str(port)]
        server = Spawned.start(f"copilot-{name}", argv, env, logs, cwd=args.app_dir)
        procs.append(server)
        url = f"http://127.0.0.1:{port}"
        server.wait_ready(url + "/readyz")
        urls.append(url)
    return procs[1], urls[0], urls[1]


def replica_id(name: str) -> str:
    """`COPILOT_REPLICA_ID` of replica `a` or `b`."""
    return f"bench-{name}"


# ---------------------------------------------------------------- /metrics


def reaper_metrics(url: str) -> dict[str, float]:
    """The replica's `copilot_reaper_sweep_seconds` series and `copilot_turns_reaped_total`."""
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(("copilot_reaper_sweep_seconds", "copilot_turns_reaped_total")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def window_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Sweeps, mean wall ms and the p99's bucket bound between two readings."""
    count = after.get("copilot_reaper_sweep_seconds_count", 0) - before.get(
        "copilot_reaper_sweep_seconds_count", 0
    )
    total = after.get("copilot_reaper_sweep_seconds_sum", 0) - before.get(
        "copilot_reaper_sweep_seconds_sum", 0
    )
    buckets = sorted(
        (float(name.split('le="')[1].rstrip('"}')), after[name] - before.get(name, 0))
        for name in after
        if name.startswith("copilot_reaper_sweep_seconds_bucket")
    )
    p99 = next((le for le, seen in buckets if count and seen >= 0.99 * count), None)
    return {
        "sweeps": count,
        "mean_ms": 1000 * total / count if count else None,
        "p99_le_ms": None if p99 is None else 1000 * p99,
    }


# ---------------------------------------------------------------- the in-process sweeps


class CountingRows(TurnRows):
    """`TurnRows` counting the sweep's statement and what it returned."""

    statements = 0
    seen = 0

    async def running_turns(self, replicas: list[str]) -> list[tuple[str, uuid.UUID]]:
        self.statements += 1
        found = await super().running_turns(replicas)
        self.seen = len(found)
        return found


@contextlib.contextmanager
def counting_round_trips(redis: Any) -> Any:
    """Count the client's Redis round trips (a command, or a pipeline's execution) inside."""
    count = [0]
    command, pipeline = redis.execute_command, redis.pipeline

    async def counted_command(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await command(*args, **kwargs)

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted_execute(*a: Any, **k: Any) -> Any:
            count[0] += 1
            return await execute(*a, **k)

        pipe.execute = counted_execute
        return pipe

    redis.execute_command, redis.pipeline = counted_command, counted_pipeline
    try:
        yield count
    finally:
        del redis.execute_command, redis.pipeline


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of every thread of `proc`, at nanosecond resolution from the scheduler's
    own accounting (`/proc/<pid>/task/*/schedstat`; psutil's ticks are 10 ms, more than a
    few hundred sweeps cost a Postgres backend); psutil where that file is missing."""
    total = 0
    try:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        t = proc.cpu_times()
        return float(t.user + t.system)
    return total / 1e9


async def sweep_cost(bench: Bench, periods: int, budget_s: float) -> dict[str, Any]:
    """Run `periods` reaper periods (announce + sweep) back to back in this process, fewer if
    they and the idle blocks would take more than `budget_s`, and measure them (see the
    module docstring)."""
    args = bench.args
    rows = await CountingRows.open(bench.database_url, 1, connect_args(bench.database_url))
    redis = create_redis(RedisSettings(url=args.redis_url))
    keys = Keys(f"copilot-bench-{bench.run_id}")
    eventlog = EventLogWriter(redis, 0.025, 3600)  # never started: nothing is appended
    reaper = Reaper(rows, redis, keys, TurnRegistry(), eventlog, SWEEPER_ID, PRODUCTION_INTERVAL_S)
    out: dict[str, Any] = {"reaped": 0}
    try:
        # The first period loads the scripts and opens the connections.
        await reaper.announce()
        out["reaped"] += await reaper.sweep()
        before = rows.statements
        with counting_round_trips(redis) as redis_trips:
            await reaper.announce()
            out["reaped"] += await reaper.sweep()
        out["redis_round_trips"] = redis_trips[0]
        out["pg_statements"] = rows.statements - before
        out["leases_checked"] = rows.seen
        backend = psutil.Process(await rows.pool.fetchval("SELECT pg_backend_pid()"))
        server = redis_server(urlsplit(args.redis_url).port or 6379)
        walls: list[float] = []
        cpus: list[float] = []
        redis_on = redis_off = 0.0
        pg0 = _cpu(backend)
        per_block = max(1, periods // REDIS_BLOCKS)
        span = 0.005 * per_block  # how long a sweeping block takes (the last one's length)
        for block in range(REDIS_BLOCKS):
            # Sweeping first in even blocks, idle first in odd ones: drift falls on both.
            for sweeping in (True, False) if block % 2 == 0 else (False, True):
                r0 = sum(_cpu(p) for p in server)
                if not sweeping:
                    await asyncio.sleep(span)
                    redis_off += sum(_cpu(p) for p in server) - r0
                    continue
                t0 = time.perf_counter()
                for _ in range(per_block):
                    if time.perf_counter() - t0 > budget_s / 2 / REDIS_BLOCKS:
                        break
                    w0, c0 = time.perf_counter(), time.process_time()
                    await reaper.announce()
                    out["reaped"] += await reaper.sweep()
                    cpus.append(time.process_time() - c0)
                    walls.append(time.perf_counter() - w0)
                span = time.perf_counter() - t0
                redis_on += sum(_cpu(p) for p in server) - r0
        pg = _cpu(backend) - pg0
        n = len(walls)
        out.update(
            periods=n,
            wall_p50_ms=1000 * percentile(walls, 50),  # type: ignore[operator]
            wall_p99_ms=1000 * percentile(walls, 99),  # type: ignore[operator]
            client_ms=1000 * sum(cpus) / n,
            pg_ms=1000 * pg / n,
            redis_ms=1000 * (redis_on - redis_off) / n,
            redis_on_ms=1000 * redis_on,
            redis_off_ms=1000 * redis_off,
        )
    finally:
        await redis.aclose()
        await rows.close()
    return out


# ---------------------------------------------------------------- the clients


def start_clients(
    bench: Bench, url_a: str, url_b: str, session_prefix: str, logs: Path
) -> subprocess.Popen[bytes]:
    """`bench/fleet_clients.py`, started and told to go."""
    args = bench.args
    argv = [sys.executable, str(BENCH / "fleet_clients.py"), "--a", url_a, "--b", url_b]
    argv += ["--n", str(args.n), "--tokens", str(args.tokens), "--rate", f"{args.rate:g}"]
    argv += ["--prefix", session_prefix, "--timeout", str(args.timeout)]
    if args.no_last_event_id:
        argv.append("--no-last-event-id")
    with open(logs / "clients.log", "ab") as err:
        clients = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=BENCH.parent,
            env=bench.env,
        )
    assert clients.stdin is not None
    assert clients.stdout is not None
    if clients.stdout.readline().strip() != b"READY":
        raise RuntimeError(f"clients did not start: see {logs / 'clients.log'}")
    clients.stdin.write(b"GO\n")
    clients.stdin.flush()
    return clients


# ---------------------------------------------------------------- checks


def well_formed(chat: dict[str, Any]) -> bool:
    """The stream a client saw (over one or more connections) obeys the UI stream's rules:
    ids contiguous from 0, every text part ended, steps balanced, one `finish`, last."""
    kinds, ids = chat["kinds"], chat["ids"]
    if ids != list(range(len(ids))) or kinds.count("finish") != 1 or kinds[-1] != "finish":
        return False
    open_parts, in_step = 0, False
    for kind in kinds:
        if kind == "start-step":
            if in_step:
                return False
            in_step = True
        elif kind == "finish-step":
            if not in_step or open_parts:
                return False
            in_step = False
        elif kind == "text-start":
            open_parts += 1
        elif kind == "text-end":
            open_parts -= 1
    return not in_step and open_parts == 0


async def _stored(db: str, like: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(db)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = await conn.fetchval(
                "SELECT count(*) FROM turns WHERE status = 'running' AND session_id LIKE $1", like
            )
            if not running:
                break
            await asyncio.sleep(0.2)
        return list(
            await conn.fetch(
                """SELECT s.id, s.active_turn_id, t.status, t.reaped_by, m.status AS message,
                          m.parts
                   FROM chat_sessions s
                   LEFT JOIN turns t ON t.session_id = s.id
                   LEFT JOIN chat_messages m
                     ON m.session_id = s.id AND m.message_id = t.assistant_message_id
                   WHERE s.id LIKE $1""",
                like,
            )
        )
    finally:
        await conn.close()


def sql_checks(bench: Bench, session_prefix: str, seen: dict[str, str]) -> dict[str, Any]:
    """What Postgres holds for the orphaned sessions (`seen`: the text each client saw) and
    for B's."""
    orphans = asyncio.run(_stored(bench.database_url, f"{session_prefix}-a-%"))
    survivors = asyncio.run(_stored(bench.database_url, f"{session_prefix}-b-%"))
    out: dict[str, Any] = {"turns": len(orphans), "reaped_by_b": 0, "reply_interrupted": 0}
    out.update(same_text=0, free=0, problems=[])
    for row in orphans:
        parts = orjson.loads(row["parts"]) if isinstance(row["parts"], str) else row["parts"]
        parts = parts or []
        text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
        out["reaped_by_b"] += row["status"] == "interrupted" and row["reaped_by"] == replica_id("b")
        last = parts[-1] if parts else {}
        out["reply_interrupted"] += (
            row["message"] == "interrupted"
            and last.get("type") == "data-error"
            and last.get("data", {}).get("code") == "interrupted"
        )
        out["same_text"] += text == seen.get(row["id"])
        if text != seen.get(row["id"]) and len(out["problems"]) < 3:
            client = seen.get(row["id"]) or ""
            out["problems"].append(
                f"{row['id']}: stored {len(text.split())} words, client saw "
                f"{len(client.split())} (stored is a prefix: {client.startswith(text)})"
            )
    out["free"] = sum(r["active_turn_id"] is None for r in orphans + survivors)
    out["sessions"] = len(orphans) + len(survivors)
    half = bench.args.n // 2
    good, problems = persisted_replies(
        bench.database_url, f"{session_prefix}-b", half, bench.args.tokens
    )
    out["b_persisted"] = good
    out["problems"] += problems[:3]
    return out


# ---------------------------------------------------------------- the run


def run(bench: Bench, logs: Path) -> dict[str, Any]:
    """Start the fleet and the clients, measure part 2, kill A, measure part 1."""
    args = bench.args
    procs: list[Spawned] = []
    result: dict[str, Any] = {"code": code_version(args.app_dir)}
    session_prefix = f"f{bench.run_id}"
    clients: subprocess.Popen[bytes] | None = None
    try:
        replica_a, url_a, url_b = start_fleet(bench, logs, procs)
        warm_up("ui", url_a, f"{session_prefix}-wa")
        warm_up("ui", url_b, f"{session_prefix}-wb")
        clients = start_clients(bench, url_a, url_b, session_prefix, logs)
        assert clients.stdout is not None
        line = clients.stdout.readline()
        if not line.startswith(b"STREAMING "):
            raise RuntimeError(f"clients failed: see {logs / 'clients.log'}")
        streaming = orjson.loads(line[10:])
        result["streaming"] = streaming["streaming"]
        result["streaming_after_s"] = streaming["at"] - time.monotonic()  # (negative: ago)
        print(f"   {streaming['streaming']}/{args.n} streams have text", flush=True)

        # Part 2: the replicas' own sweeps over a window, then the in-process ones.
        before = {u: reaper_metrics(u) for u in (url_a, url_b)}
        time.sleep(args.window)
        after = {u: reaper_metrics(u) for u in (url_a, url_b)}
        result["window"] = {
            name: window_stats(before[u], after[u]) for name, u in (("A", url_a), ("B", url_b))
        }
        print(f"   replicas' sweeps over {args.window:g} s measured", flush=True)
        result["sweeps"] = asyncio.run(sweep_cost(bench, args.sweeps, args.sweep_budget))
        print(f"   {result['sweeps']['periods']} in-process periods measured", flush=True)
        elapsed = time.monotonic() - streaming["at"]
        result["left_s"] = args.tokens / args.rate - elapsed

        # Part 1: SIGKILL A.
        killed_at = time.monotonic()
        replica_a.popen.kill()
        replica_a.popen.wait(10)
        print(f"   A killed ({result['left_s']:.1f} s of its turns left)", flush=True)
        bound = args.lease_ttl + args.reap_interval * (1 + JITTER) + 1
        if result["left_s"] < bound + 2:
            print(f"   WARNING: turns may end before the orphans' bound ({bound:.1f} s)")
        try:
            out, _ = clients.communicate(timeout=args.timeout + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError("the clients overran their deadline") from None
        report = orjson.loads(out.strip().splitlines()[-1])
        (logs / "clients.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        result["clients_cpu_s"] = report["cpu_s"]
        result["reaped_metric_b"] = reaper_metrics(url_b).get("copilot_turns_reaped_total")
        result["part1"] = part1(report["chats"], killed_at)
        seen = {c["session_id"]: c["text"] for c in report["chats"] if c["replica"] == "a"}
        result["sql"] = sql_checks(bench, session_prefix, seen)
    finally:
        if clients is not None and clients.poll() is None:
            clients.kill()
            clients.wait()
        for proc in reversed(procs):
            proc.stop()
    return result


def part1(chats: list[dict[str, Any]], killed_at: float) -> dict[str, Any]:
    """The orphaned clients' figures (times from the SIGKILL) and B's clients' outcome."""
    orphans = [c for c in chats if c["replica"] == "a"]
    mine = [c for c in chats if c["replica"] == "b"]
    resumed = [c for c in orphans if c["dropped_at"] is not None]
    ends = [c["finish_at"] - killed_at for c in resumed if c["finish_at"] is not None]
    drops = [c["dropped_at"] - killed_at for c in resumed]
    words = max((len(c["text"].split()) for c in mine), default=0)
    return {
        "orphans": len(orphans),
        "resumed": len(resumed),
        "finished_on_a": sum(
            c["finish_at"] is not None and c["dropped_at"] is None for c in orphans
        ),
        "drop_p50_ms": _ms(percentile(drops, 50)),
        "finish_p50_ms": _ms(percentile(ends, 50)),
        "finish_p99_ms": _ms(percentile(ends, 99)),
        "finish_max_ms": _ms(max(ends, default=None)),
        "interrupted": sum(c["error_code"] == "interrupted" for c in resumed),
        "never_ended": sum(c["finish_at"] is None for c in orphans),
        "resume_204": sum(204 in c["resumes"] for c in resumed),
        "well_formed": sum(well_formed(c) for c in resumed),
        "id_gap": sum(
            c["resumed_first_id"] is not None and c["resumed_first_id"] != c["expected_first_id"]
            for c in resumed
        ),
        "b_ok": sum(
            c["finish_reason"] == "stop" and c["done"] and c["error"] is None and bool(c["text"])
            for c in mine
        ),
        "b_full": sum(len(c["text"].split()) == words for c in mine),
        "b": len(mine),
        "errors": sorted({c["error"] for c in chats if c["error"]})[:5],
        "not_well_formed": [
            f"{c['session_id']}: last id seen from A {c['last_id_before_resume']}; the last "
            f"chunks seen: {list(zip(c['ids'][-6:], c['kinds'][-6:], strict=False))}"
            for c in resumed
            if not well_formed(c)
        ][:3],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


# ---------------------------------------------------------------- the tables


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def settings_line(args: argparse.Namespace) -> str:
    """The fleet settings and the bound they give."""
    bound = args.lease_ttl + args.reap_interval * (1 + JITTER) + 1
    return (
        f"lease TTL {args.lease_ttl:g} s, reap interval {args.reap_interval:g} s (production: "
        f"30 s and {PRODUCTION_INTERVAL_S:g} s; shortened so that a run is short); expected "
        f"bound TTL + interval x {1 + JITTER:g} + ~1 s = {bound:.1f} s; N = {args.n} "
        f"({args.n - args.n // 2} on A, {args.n // 2} on B), {args.tokens} tokens at "
        f"{args.rate:g} tokens/s per turn ({args.tokens / args.rate:.0f} s); orphans resume on "
        f"B {'from the start' if args.no_last_event_id else 'with Last-Event-ID'}"
    )


def render(args: argparse.Namespace, result: dict[str, Any]) -> str:
    """The two parts' markdown tables."""
    p1, sql, sw = result["part1"], result["sql"], result["sweeps"]
    n_a, n_b = p1["orphans"], p1["b"]
    lines = [
        "Part 1: orphan recovery (SIGKILL of A)",
        "",
        "| what | value |",
        "|---|---|",
        f"| streams with text when measured (of {args.n}) | {result['streaming']} |",
        f"| orphaned streams (on A) | {n_a} ({p1['resumed']} resumed on B, "
        f"{p1['finished_on_a']} finished on A before the kill) |",
        f"| connection drop seen, p50 ms after SIGKILL | {_num(p1['drop_p50_ms'], 1)} |",
        f"| `finish` after SIGKILL p50 ms | {_num(p1['finish_p50_ms'])} |",
        f"| `finish` after SIGKILL p99 ms | {_num(p1['finish_p99_ms'])} |",
        f"| `finish` after SIGKILL max ms | {_num(p1['finish_max_ms'])} |",
        f"| ended with `data-error` `interrupted` | {p1['interrupted']}/{n_a} |",
        f"| never ended (within {args.timeout:g} s) | {p1['never_ended']} |",
        f"| resume answered 204 (turn already closed) | {p1['resume_204']} |",
        f"| stream well formed across the resume | {p1['well_formed']}/{p1['resumed']} |",
        f"| resumes not starting at the id asked for | {p1['id_gap']} |",
        f"| SQL: turn `interrupted`, `reaped_by` = B | {sql['reaped_by_b']}/{n_a} |",
        f"| SQL: reply `interrupted`, last part `data-error` | {sql['reply_interrupted']}/{n_a} |",
        f"| SQL: stored reply text = text the client saw | {sql['same_text']}/{n_a} |",
        f"| SQL: sessions with `active_turn_id` NULL | {sql['free']}/{sql['sessions']} |",
        f"| B's metric copilot_turns_reaped_total | {_num(result['reaped_metric_b'])} |",
        f"| B's streams: finish `stop`, `[DONE]`, text | {p1['b_ok']}/{n_b} "
        f"({p1['b_full']} with all words) |",
        f"| SQL: B's replies persisted (`completed`, every word) | {sql['b_persisted']}/{n_b} |",
        f"| clients' CPU s (whole run) | {result['clients_cpu_s']:.2f} |",
    ]
    lines += ["", f"Part 2: the reaper's cost with {args.n} live turns, nothing orphaned", ""]
    lines += [
        "| sweeps by | periods | wall ms p50 | wall ms p99 | client CPU ms | PG CPU ms "
        "| Redis CPU ms | round trips | leases checked |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in result["window"].items():
        lines.append(
            f"| replica {name} (/metrics over {args.window:g} s; sweep only) | {w['sweeps']:.0f} "
            f"| mean {_num(w['mean_ms'], 2)} | <= {_num(w['p99_le_ms'], 1)} (its bucket) "
            f"| - | - | - | - | {args.n // 2} |"
        )
    trips = f"{sw['redis_round_trips']} Redis + {sw['pg_statements']} PG"
    lines.append(
        f"| this process (announce + sweep) | {sw['periods']} | {sw['wall_p50_ms']:.2f} "
        f"| {sw['wall_p99_ms']:.2f} | {sw['client_ms']:.3f} | {sw['pg_ms']:.3f} "
        f"| {sw['redis_ms']:.3f} | {trips} | {sw['leases_checked']} |"
    )
    lines += [
        "",
        "| interval | periods/min per replica | client CPU ms/min | PG CPU ms/min "
        "| Redis CPU ms/min | total CPU ms/min | share of one core |",
        "|---|---|---|---|---|---|---|",
    ]
    per = sw["client_ms"] + sw["pg_ms"] + max(sw["redis_ms"], 0.0)
    for label, interval in (
        (f"{PRODUCTION_INTERVAL_S:g} s (production)", PRODUCTION_INTERVAL_S),
        (f"{args.reap_interval:g} s (this run)", args.reap_interval),
    ):
        k = 60 / interval
        lines.append(
            f"| {label} | {k:g} | {k * sw['client_ms']:.1f} | {k * sw['pg_ms']:.1f} "
            f"| {k * sw['redis_ms']:.1f} | {k * per:.1f} | {100 * k * per / 60000:.3f}% |"
        )
    lines += [
        "",
        f"Redis CPU: {sw['redis_on_ms']:.0f} ms over the sweeping blocks against "
        f"{sw['redis_off_ms']:.0f} ms over as long without; in-process periods that reaped "
        f"something: {sw['reaped']} (should be 0).",
    ]
    for problem in p1["errors"]:
        lines.append(f"client error: {problem}")
    for problem in p1["not_well_formed"]:
        lines.append(f"not well formed: {problem}")
    for problem in sql["problems"]:
        lines.append(f"SQL: {problem}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, help="live streams, half on each replica (200)")
    parser.add_argument("--tokens", type=int, help="tokens per turn (800; --quick: 360)")
    parser.add_argument("--rate", type=float, default=20, help="tokens per second per turn")
    parser.add_argument("--lease-ttl", type=float, default=5.0, help="COPILOT_LEASE_TTL_S")
    parser.add_argument("--reap-interval", type=float, default=1.0, help="COPILOT_REAP_INTERVAL_S")
    parser.add_argument("--window", type=float, help="seconds of the replicas' sweeps (10)")
    parser.add_argument("--sweeps", type=int, help="reaper periods run in this process (500)")
    parser.add_argument(
        "--sweep-budget",
        type=float,
        help="seconds the in-process periods and their idle blocks may take at most (8)",
    )
    parser.add_argument(
        "--no-last-event-id",
        action="store_true",
        help="orphaned clients resume without Last-Event-ID (the server replays from the start)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N=20, short turns")
    parser.add_argument("--timeout", type=float, help="seconds a chat may take in all")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="admin connection; a bench database is created beside it",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--copilot-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of both copilot serve processes (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=None, help="logs (default: a new temp dir)")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=BENCH.parent,
        help="run copilot serve and the fake upstream from this source tree",
    )
    args = parser.parse_args(argv)
    args.app_dir = args.app_dir.resolve()
    quick = args.quick
    args.n = args.n or (20 if quick else 200)
    args.tokens = args.tokens or (360 if quick else 800)
    args.window = args.window if args.window is not None else (2.0 if quick else 10.0)
    args.sweep_budget = args.sweep_budget or (3.0 if quick else 8.0)
    args.sweeps = args.sweeps or (100 if quick else 500)
    turn_s = args.tokens / args.rate
    args.timeout = args.timeout or turn_s + 120
    bound = args.lease_ttl + args.reap_interval * (1 + JITTER) + 1
    if turn_s < args.window + args.sweep_budget + bound + 5:
        parser.error(
            f"turns of {turn_s:.0f} s are too short: the window ({args.window:g} s), the "
            f"in-process sweeps ({args.sweep_budget:g} s) and the orphans' bound "
            f"({bound:.1f} s) must fit in them, with 5 s to spare"
        )
    for url in (args.database_url, args.redis_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error(f"only loopback services: {url}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run once, print the settings and the tables."""
    args = parse_args(argv)
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    out = args.out or Path(tempfile.mkdtemp(prefix=f"copilot-bench-fleet-{run_id}-"))
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, run_id, out, clean_env(), database=f"copilot_bench_{run_id}")
    cores = psutil.cpu_count()
    print(f"{cores} cores; code: {code_version(args.app_dir)}; logs in {out}", flush=True)
    print(settings_line(args), flush=True)
    create_database(args.database_url, bench.database or "")
    psutil.cpu_percent()
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        result = run(bench, out)
    finally:
        if not args.keep_db:
            drop_database(args.database_url, bench.database or "")
        clear_redis(args.redis_url, f"copilot-bench-{run_id}")
    (out / "results.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    busy = psutil.cpu_percent()
    load1 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(settings_line(args))
    print(
        f"{cores} cores, code {result['code']}; host busy {busy:.0f}% over the run (every "
        f"process of the machine); load average {load0} at the start, {load1} at the end"
    )
    print()
    print(render(args, result))
    print(f"\ntotal time {time.monotonic() - began:.0f}s; logs and results.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
