"""`copilot serve` on the Claude Agent SDK backend against the bare SDK: time to first token,
CPU and memory of a session's first (cold) and follow-up (warm) turn.

    uv run python bench/sdk.py                  # N = 1, 4, 8, 16 concurrent sessions
    uv run python bench/sdk.py --n 1            # a quick run
    uv run python bench/sdk.py --turns 16       # at least 16 cold turns a row (default 8)

For each N, two rows, each with fresh processes, against one fake upstream process
(`copilot fake-upstream`, shared by the whole run; its CPU is in neither row), their rounds
interleaved (below):
- `bare`: `bench/sdk_bare.py`, a few lines of claude-agent-sdk (`ClaudeSDKClient`, `connect`,
  `query`, `receive_response`) with the options and environment the backend gives the CLI:
  the floor.
- `copilot`: `copilot serve` (COPILOT_BACKEND=claude_sdk) on this machine's Postgres (a
  database created for the run, dropped after it) and Redis (a key prefix of its own),
  driven over HTTP: `POST /api/v1/chat {"id", "message"}`, the SSE stream read to `[DONE]`.

Both do one warm-up session first (first-use costs). A round is N first turns at once (each
spawns its session's CLI: cold) and, once all have ended, N follow-up turns at once (the
session's open CLI: warm); then its CLIs are closed (bare) or its sessions deleted (copilot).
Rounds are repeated with new sessions until a row has at least `--turns` cold turns (a cold
turn is one sample of a CLI boot, whose CPU varies by ±20%), a bare round and a copilot round
in turn (bare first in even rounds), so that the machine's drift falls on both rows alike.
Every reply is 50 tokens at 500 tokens/s.
TTFT: from `connect()` (bare cold), `query()` (bare warm) or sending the POST (copilot) to the
first text delta. CPU: user+system seconds of the process tree (the bare script or the server,
with their CLIs) from a phase's first turn's start to `SETTLE_S` after its last turn's end
(a CLI works on after its result: without the wait, whichever mode ends its turns later
would be charged more of that work), summed over the phases, per turn; the CLIs are still
open when it is read. PG+Redis: CPU of the bench
database's Postgres backends and of redis-server during copilot's phases, which copilot serve
uses and the bare script does not (not in the targets).
Peak RSS: of the process tree, sampled every 50 ms. Errors: turns without HTTP 200, `[DONE]`
(or a successful ResultMessage) and exactly 50 words; there must be none.
Rest of machine: the busy CPU seconds of every other process during the row's phases (the
fake upstream, this driver, anything else running): the noise indicator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from measure import (
    CpuByPid,
    RssSampler,
    Spawned,
    code_version,
    cpu_seconds,
    free_port,
    postgres_backends,
    redis_server,
)
from profiling import analyse, recording, resolve_py_spy
from servers import BENCH, COPILOT, clean_env
from storage import clear_redis, create_database, database_url, drop_database

PROMPT, TOKENS = "[[fake:text tokens=50 rate=500]]", 50
ADDED_MS, ADDED_CPU = 50.0, 0.10
MODES = ("bare", "copilot")
SETTLE_S = 1.0  # a CLI works on for a while after its turn (~0.08 s of CPU in ~1 s): counted


@dataclass
class Row:
    """One (mode, N): times to first token in seconds (None: no text), CPU, memory, errors."""

    mode: str
    n: int
    rounds: int = 1
    cold: list[float | None] = field(default_factory=list)
    warm: list[float | None] = field(default_factory=list)
    errors: int = 0
    cpu: list[float] = field(default_factory=lambda: [0.0, 0.0])  # seconds: cold, warm phases
    python_cpu_s: float = 0.0  # of which the Python process itself, without its CLIs
    store_cpu_s: float | None = None
    peak_rss_mb: float = 0.0
    rest_cpu_s: float | None = None  # the machine's other busy CPU meanwhile: the noise
    headers: list[list[float]] | None = None  # copilot: seconds to the headers, cold and warm

    def cpu_per_turn(self, phase: int | None = None) -> float | None:
        """CPU seconds per turn of one phase (0 cold, 1 warm) or of both."""
        turns = self.n * self.rounds
        if not any(self.cpu):
            return None
        return sum(self.cpu) / (2 * turns) if phase is None else self.cpu[phase] / turns

    def ms(self, turns: str, how: str) -> float | None:
        """p50 or max of the cold or warm TTFTs, in ms."""
        times: list[float] = [t for t in getattr(self, turns) if t is not None]
        if not times:
            return None
        return 1000 * (statistics.median(times) if how == "p50" else max(times))


@dataclass
class Run:
    """What every row of one run shares."""

    fake_url: str
    root: Path  # short, under /tmp: the CLIs' socket paths must fit in 107 bytes
    out: Path
    admin_url: str
    redis_url: str
    database: str
    key_prefix: str
    copilot_env: dict[str, str] = field(default_factory=dict)  # `--copilot-env`
    rows: int = 0  # rows started: names their directories, so that an N can be repeated

    def next_tag(self, mode: str, n: int) -> str:
        """A name for the next row's logs and workspaces."""
        self.rows += 1
        return f"{self.rows}-{mode}-n{n}"


def host_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


class Measured:
    """A process tree's CPU per phase (and optionally Postgres + Redis), its peak RSS, and the
    rest of the machine's CPU during its phases. Only the phases count (`begin` to `lap`):
    the other mode's rounds and the closing of rounds are left out."""

    def __init__(self, pid: int, row: Row, store: CpuByPid | None = None) -> None:
        self.proc, self.row, self.store = psutil.Process(pid), row, store
        self.rss = RssSampler(pid).__enter__()
        if store is not None:
            row.store_cpu_s = 0.0
        row.rest_cpu_s = 0.0

    def _cpu(self) -> tuple[float, float, float]:
        own = self.proc.cpu_times()
        return cpu_seconds([self.proc]), own.user + own.system, host_busy_seconds()

    def begin(self) -> None:
        """A phase starts."""
        if self.store is not None:
            self.store.begin()
        self.mark = self._cpu()

    def lap(self, phase: int) -> None:
        """The phase (0 cold, 1 warm) that began last has ended: add its CPU to the row."""
        tree, python, host = (now - then for now, then in zip(self._cpu(), self.mark, strict=True))
        store = self.store.end() if self.store is not None else 0.0
        self.row.cpu[phase] += tree
        self.row.python_cpu_s += python
        if self.row.store_cpu_s is not None:
            self.row.store_cpu_s += store
        self.row.rest_cpu_s = (self.row.rest_cpu_s or 0.0) + host - tree - store

    def close(self) -> None:
        """Stop sampling memory; the row gets its peak."""
        self.rss.__exit__(None, None, None)
        self.row.peak_rss_mb = self.rss.peak / 2**20


class Bare:
    """The floor: bench/sdk_bare.py with N sessions a round, driven over its stdin/stdout."""

    def __init__(self, run: Run, n: int, rounds: int) -> None:
        self.row = Row("bare", n, rounds)
        tag = run.next_tag("bare", n)
        script = str(BENCH / "sdk_bare.py")
        argv = [sys.executable, script, run.fake_url, str(run.root / tag), str(n), str(rounds)]
        self.log = run.out / f"{tag}.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=clean_env(),
                text=True,
            )
        if self._read() != "READY":
            self.close()
            raise RuntimeError(f"sdk_bare.py did not start: see {self.log}")
        self.measured = Measured(self.proc.pid, self.row)

    def _say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sdk_bare.py failed: see {self.log}")
        return line.strip()

    async def round(self) -> None:
        """N cold turns at once, then N warm ones; then the round's CLIs are closed."""
        for phase, turns in enumerate((self.row.cold, self.row.warm)):
            self.measured.begin()
            self._say("GO")
            results = json.loads(self._read())
            await asyncio.sleep(SETTLE_S)
            self.measured.lap(phase)
            turns += [t for t, _ in results]
            self.row.errors += sum(failed for _, failed in results)
        self._say("CLOSE")
        if self._read() != "CLOSED":
            raise RuntimeError(f"sdk_bare.py failed: see {self.log}")

    def close(self) -> None:
        if hasattr(self, "measured"):
            self.measured.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


async def chat(http: httpx.AsyncClient, sid: str) -> tuple[float | None, bool, float]:
    """One turn over HTTP: seconds to the first `text-delta`, whether it went wrong, and
    seconds to the response's headers (the turn's start-up work before the backend runs)."""
    t0 = time.perf_counter()
    first, text, done, failed, headers = None, "", False, False, float("nan")
    try:
        async with http.stream("POST", "/api/v1/chat", json={"id": sid, "message": PROMPT}) as r:
            headers = time.perf_counter() - t0
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    if chunk.get("type") == "text-delta":
                        first, text = first or time.perf_counter() - t0, text + chunk["delta"]
                    failed = failed or chunk.get("type") in ("error", "data-error")
    except httpx.HTTPError:
        return first, True, headers
    failed = failed or r.status_code != 200 or not done or len(text.split()) != TOKENS
    return first, failed, headers


class Served:
    """`copilot serve` on the claude_sdk backend with N sessions a round over HTTP (under
    py-spy, its profile in the logs, when given)."""

    def __init__(self, run: Run, n: int, rounds: int, py_spy: list[str] | None = None) -> None:
        self.row = Row("copilot (py-spy)" if py_spy else "copilot", n, rounds)
        tag = run.next_tag("copilot-py-spy" if py_spy else "copilot", n)
        env = (
            clean_env()
            | {
                "COPILOT_BACKEND": "claude_sdk",
                "DATABASE_URL": database_url(run.admin_url, run.database),
                "REDIS_URL": run.redis_url,
                "COPILOT_REDIS_KEY_PREFIX": run.key_prefix,
                "ANTHROPIC_BASE_URL": run.fake_url,
                "ANTHROPIC_API_KEY": "bench",
                "COPILOT_TITLE_GENERATION": "0",
                "COPILOT_WORKSPACES_DIR": str(run.root / tag),
                "COPILOT_SDK_MAX_LIVE": str(n + 1),
                "COPILOT_DATA_DIR": str(run.out / "data"),
            }
            | run.copilot_env
        )
        port = free_port()
        argv = [COPILOT, "serve", "--host", "127.0.0.1", "--port", str(port)]
        logs = run.out / tag
        logs.mkdir()
        self.url = f"http://127.0.0.1:{port}"
        self.server = Spawned.start("copilot", argv, env, logs)
        self.spy: contextlib.ExitStack = contextlib.ExitStack()
        try:
            self.server.wait_ready(self.url + "/readyz")
            redis_port = httpx.URL(run.redis_url).port or 6379
            store = CpuByPid(lambda: postgres_backends(run.database) + redis_server(redis_port))
            self.measured = Measured(self.server.pid, self.row, store)
            if py_spy:
                self.spy.enter_context(recording(py_spy, self.server.pid, logs, clean_env()))
        except BaseException:
            self.close()
            raise
        self.prefix = f"sdk{n}-{uuid.uuid4().hex[:6]}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=120)
        self.rounds_done = 0

    async def warm_up(self) -> None:
        """A session of two turns, deleted after it: first-use costs."""
        warm_up = f"{self.prefix}-w"
        for _ in range(2):
            if (await chat(self.http, warm_up))[1]:
                raise RuntimeError("the warm-up chat failed")
        (await self.http.delete(f"/api/v1/sessions/{warm_up}")).raise_for_status()

    async def round(self) -> None:
        """N cold turns at once, then N warm ones; then the round's sessions are deleted."""
        sids = [f"{self.prefix}-r{self.rounds_done}-{i}" for i in range(self.row.n)]
        self.rounds_done += 1
        headers = self.row.headers = self.row.headers or [[], []]
        for phase, turns in enumerate((self.row.cold, self.row.warm)):
            self.measured.begin()
            results = await asyncio.gather(*(chat(self.http, sid) for sid in sids))
            await asyncio.sleep(SETTLE_S)
            self.measured.lap(phase)
            turns += [t for t, _, _ in results]
            headers[phase] += [h for _, _, h in results]
            self.row.errors += sum(failed for _, failed, _ in results)
        for sid in sids:
            (await self.http.delete(f"/api/v1/sessions/{sid}")).raise_for_status()

    async def aclose(self) -> None:
        await self.http.aclose()
        self.close()

    def close(self) -> None:
        self.spy.close()
        if hasattr(self, "measured"):
            self.measured.close()
        self.server.stop()


async def run_pair(run: Run, n: int, rounds: int) -> list[Row]:
    """The bare row and the copilot row of one N, their rounds interleaved (bare first in
    even rounds, copilot first in odd ones), so that the machine's drift falls on both."""
    bare = Bare(run, n, rounds)
    try:
        served = Served(run, n, rounds)
        try:
            await served.warm_up()
            for r in range(rounds):
                for mode in (bare, served) if r % 2 == 0 else (served, bare):
                    await mode.round()
        finally:
            await served.aclose()
    finally:
        bare.close()
    return [bare.row, served.row]


async def run_profiled(run: Run, n: int) -> Row:
    """One round of copilot serve alone, under py-spy."""
    served = Served(run, n, 1, resolve_py_spy())
    try:
        await served.warm_up()
        await served.round()
    finally:
        await served.aclose()
    return served.row


def table(rows: list[Row]) -> str:
    """The rows as a markdown table."""

    def num(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| mode | N x rounds | cold TTFT p50 ms | cold max | warm TTFT p50 ms | warm max "
        "| CPU s/turn cold | warm | both | of which Python | PG+Redis CPU s/turn "
        "| peak RSS MB | errors "
        "| rest of machine CPU s | headers p50 ms cold/warm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        store = None if r.store_cpu_s is None else r.store_cpu_s / (2 * r.n * r.rounds)
        headers = "-"
        if r.headers:
            headers = " / ".join(num(1000 * statistics.median(h), 1) for h in r.headers if h)
        cells = [
            r.mode,
            f"{r.n} x {r.rounds}",
            *(num(r.ms(turns, how)) for turns in ("cold", "warm") for how in ("p50", "max")),
            *(num(r.cpu_per_turn(phase), 3) for phase in (0, 1, None)),
            num(r.python_cpu_s / (2 * r.n * r.rounds), 3),
            num(store, 4),
            num(r.peak_rss_mb),
            str(r.errors),
            num(r.rest_cpu_s, 1),
            headers,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """PASS/MISS of each target for each pair of rows (p50 against p50)."""
    out = []
    measured = [r for r in rows if r.mode in MODES]
    for bare, served in zip(measured[0::2], measured[1::2], strict=False):
        for turns, what in (("warm", "warm follow-up"), ("cold", "first turn")):
            a, b = served.ms(turns, "p50"), bare.ms(turns, "p50")
            added = None if a is None or b is None else a - b
            shown = "?" if added is None else f"{added:+.0f}"
            verdict = "PASS" if added is not None and added < ADDED_MS else "MISS"
            limit = f"p50; < {ADDED_MS:.0f}"
            out.append(f"N={bare.n}: {what} adds {shown} ms to first token ({limit}): {verdict}")
        a, b = served.cpu_per_turn(), bare.cpu_per_turn()
        added = None if a is None or not b else a / b - 1
        shown = "?" if added is None else f"{added:+.0%}"
        verdict = "PASS" if added is not None and added < ADDED_CPU else "MISS"
        out.append(f"N={bare.n}: CPU per turn adds {shown} (< {ADDED_CPU:.0%}): {verdict}")
        errors = served.errors + bare.errors
        out.append(f"N={bare.n}: {errors} errors: {'PASS' if errors == 0 else 'MISS'}")
    return out


def main() -> None:
    """Run both rows for each N against one fake upstream; print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--copilot-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of copilot serve (repeatable)",
    )
    parser.add_argument(
        "--turns", type=int, default=8, help="cold turns a row has at least (rounds of N)"
    )
    parser.add_argument(
        "--profile", type=int, metavar="N", help="then one more copilot run at N under py-spy"
    )
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:6]
    out = Path(tempfile.mkdtemp(prefix=f"copilot-bench-sdk-{run_id}-"))
    root = Path(tempfile.mkdtemp(prefix="cb", dir="/tmp"))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{psutil.cpu_count()} cores, load average {load}; code {code_version(BENCH.parent)}; "
        f"N = {args.n}; logs in {out}",
        flush=True,
    )
    port = free_port()
    run = Run(
        f"http://127.0.0.1:{port}",
        root,
        out,
        args.database_url,
        args.redis_url,
        f"copilot_bench_{run_id}",
        f"copilot-bench-sdk-{run_id}",
        dict(item.split("=", 1) for item in args.copilot_env),
    )
    create_database(args.database_url, run.database)
    argv = [COPILOT, "fake-upstream", "--host", "127.0.0.1", "--port", str(port)]
    fake = Spawned.start("fake-upstream", argv, clean_env(), out)
    rows: list[Row] = []
    try:
        fake.wait_ready(run.fake_url + "/healthz")
        for n in args.n:
            rounds = -(-args.turns // n)
            print(f"-- N={n} x {rounds} rounds, bare and copilot ...", end=" ", flush=True)
            t0 = time.monotonic()
            try:
                rows += asyncio.run(run_pair(run, n, rounds))
            except Exception as exc:  # reported as rows of errors; the other N still run
                print(f"FAILED: {type(exc).__name__}: {exc}", end=" ")
                rows += [Row(mode, n, rounds, errors=2 * n * rounds) for mode in MODES]
            errors = rows[-2].errors + rows[-1].errors
            print(f"{time.monotonic() - t0:.1f}s, {errors} errors", flush=True)
        if args.profile:
            print(f"-- copilot N={args.profile} under py-spy ...", flush=True)
            rows.append(asyncio.run(run_profiled(run, args.profile)))
    finally:
        fake.stop()
        drop_database(args.database_url, run.database)
        clear_redis(args.redis_url, run.key_prefix)
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(rows))
    print()
    print("\n".join(targets(rows)))
    for profile in out.glob("*/profile.txt"):
        print(f"\nHotspots of copilot serve ({profile}):\n{analyse(profile.read_text())}")


if __name__ == "__main__":
    main()
