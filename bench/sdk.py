"""`copilot serve` on the Claude Agent SDK backend against the bare SDK: time to first token,
CPU and memory of a session's first (cold) and follow-up (warm) turn.

    uv run python bench/sdk.py                  # N = 1, 4, 8, 16 concurrent sessions
    uv run python bench/sdk.py --n 1            # a quick run

For each N, two rows, each with fresh processes, against one fake upstream process
(`copilot fake-upstream`, shared by the whole run; its CPU is in neither row):
- `bare`: `bench/sdk_bare.py`, a few lines of claude-agent-sdk (`ClaudeSDKClient`, `connect`,
  `query`, `receive_response`) with the options and environment the backend gives the CLI:
  the floor.
- `copilot`: `copilot serve` (COPILOT_BACKEND=claude_sdk) on this machine's Postgres (a
  database created for the run, dropped after it) and Redis (a key prefix of its own),
  driven over HTTP: `POST /api/v1/chat {"id", "message"}`, the SSE stream read to `[DONE]`.

Both do one warm-up session first (first-use costs), then N first turns at once (each spawns
its session's CLI: cold) and, once all have ended, N follow-up turns at once (the session's
open CLI: warm). Every reply is 50 tokens at 500 tokens/s.
TTFT: from `connect()` (bare cold), `query()` (bare warm) or sending the POST (copilot) to the
first text delta. CPU: user+system seconds of the process tree (the bare script or the server,
with their CLIs) from the first turn's start to the last turn's end, per turn; the CLIs are
still open when it is read. PG+Redis: CPU of the bench database's Postgres backends and of
redis-server, which copilot serve uses and the bare script does not (not in the targets).
Peak RSS: of the process tree, sampled every 50 ms. Errors: turns without HTTP 200, `[DONE]`
(or a successful ResultMessage) and exactly 50 words; there must be none.
Rest of machine: the busy CPU seconds of every other process during the row (the fake
upstream, this driver, anything else running): the noise indicator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
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


@dataclass
class Row:
    """One (mode, N): times to first token in seconds (None: no text), CPU, memory, errors."""

    mode: str
    n: int
    cold: list[float | None] = field(default_factory=list)
    warm: list[float | None] = field(default_factory=list)
    errors: int = 0
    cpu: list[float] = field(default_factory=list)  # seconds: the cold phase, the warm one
    python_cpu_s: float = 0.0  # of which the Python process itself, without its CLIs
    store_cpu_s: float | None = None
    peak_rss_mb: float = 0.0
    rest_cpu_s: float | None = None  # the machine's other busy CPU meanwhile: the noise
    headers: list[float] | None = None  # copilot: p50 seconds to the headers, cold and warm

    def cpu_per_turn(self, phase: int | None = None) -> float | None:
        """CPU seconds per turn of one phase (0 cold, 1 warm) or of both."""
        if len(self.cpu) != 2:
            return None
        return sum(self.cpu) / (2 * self.n) if phase is None else self.cpu[phase] / self.n

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
    """CPU per phase (tree, and optionally Postgres + Redis), peak RSS and the rest of the
    machine's CPU, for a process tree."""

    def __init__(self, pid: int, store: CpuByPid | None = None) -> None:
        self.proc, self.store, self.rss = psutil.Process(pid), store, RssSampler(pid)

    def _cpu(self) -> tuple[float, float]:
        own = self.proc.cpu_times()
        return cpu_seconds([self.proc]), own.user + own.system

    def __enter__(self) -> Measured:
        self.rss.__enter__()
        if self.store is not None:
            self.store.begin()
        self.host = host_busy_seconds()
        self.mark = self._cpu()
        return self

    def lap(self, row: Row) -> None:
        """Add the CPU seconds of the phase that just ended to the row."""
        now = self._cpu()
        row.cpu.append(now[0] - self.mark[0])
        row.python_cpu_s += now[1] - self.mark[1]
        self.mark = now

    def stop(self, row: Row) -> None:
        """Fill the row's store CPU, peak RSS and the rest of the machine's CPU (while the
        CLIs are open)."""
        row.peak_rss_mb = self.rss.peak / 2**20
        if self.store is not None:
            row.store_cpu_s = self.store.end()
        row.rest_cpu_s = host_busy_seconds() - self.host - sum(row.cpu) - (row.store_cpu_s or 0)

    def __exit__(self, *exc: object) -> None:
        self.rss.__exit__(*exc)


def run_bare(run: Run, n: int) -> Row:
    """The floor: bench/sdk_bare.py with N sessions."""
    row = Row("bare", n)
    tag = run.next_tag("bare", n)
    script = str(BENCH / "sdk_bare.py")
    argv = [sys.executable, script, run.fake_url, str(run.root / tag), str(n)]
    log = run.out / f"{tag}.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=clean_env(),
            text=True,
        )
    assert proc.stdin is not None
    assert proc.stdout is not None

    def say(line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    phases: list[list[tuple[float | None, bool]]] = []
    try:
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"sdk_bare.py did not start: see {log}")
        with Measured(proc.pid) as measured:
            for _ in ("cold", "warm"):
                say("GO")
                line = proc.stdout.readline()
                measured.lap(row)
                if not line:
                    raise RuntimeError(f"sdk_bare.py failed: see {log}")
                phases.append(json.loads(line))
            measured.stop(row)
        say("END")
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    row.cold, row.warm = ([t for t, _ in turns] for turns in phases)
    row.errors = sum(failed for turns in phases for _, failed in turns)
    return row


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


async def drive_copilot(
    url: str, row: Row, measured: Measured, prefix: str, spy: AbstractContextManager[None]
) -> None:
    """A warm-up session (deleted after it), then the N cold turns, then the N warm ones
    (those under `spy`)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        warm_up = f"{prefix}-w"
        for _ in range(2):
            if (await chat(http, warm_up))[1]:
                raise RuntimeError("the warm-up chat failed")
        (await http.delete(f"/api/v1/sessions/{warm_up}")).raise_for_status()
        with spy, measured:
            sids = [f"{prefix}-{i}" for i in range(row.n)]
            cold = await asyncio.gather(*(chat(http, sid) for sid in sids))
            measured.lap(row)
            warm = await asyncio.gather(*(chat(http, sid) for sid in sids))
            measured.lap(row)
            measured.stop(row)
    row.cold, row.warm = [t for t, _, _ in cold], [t for t, _, _ in warm]
    row.errors = sum(failed for _, failed, _ in cold + warm)
    row.headers = [statistics.median(h for _, _, h in turns) for turns in (cold, warm)]


def run_copilot(run: Run, n: int, py_spy: list[str] | None = None) -> Row:
    """`copilot serve` on the claude_sdk backend with N sessions over HTTP (under py-spy, its
    profile in the logs, when given)."""
    row = Row("copilot (py-spy)" if py_spy else "copilot", n)
    tag = run.next_tag("copilot-py-spy" if py_spy else "copilot", n)
    port = free_port()
    env = clean_env() | {
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
    argv = [COPILOT, "serve", "--host", "127.0.0.1", "--port", str(port)]
    logs = run.out / tag
    logs.mkdir()
    server = Spawned.start("copilot", argv, env, logs)
    try:
        url = f"http://127.0.0.1:{port}"
        server.wait_ready(url + "/readyz")
        redis_port = httpx.URL(run.redis_url).port or 6379
        store = CpuByPid(lambda: postgres_backends(run.database) + redis_server(redis_port))
        measured = Measured(server.pid, store)
        spy: AbstractContextManager[None] = nullcontext()
        if py_spy:
            spy = recording(py_spy, server.pid, logs, clean_env())
        prefix = f"sdk{n}-{uuid.uuid4().hex[:6]}"
        asyncio.run(drive_copilot(url, row, measured, prefix, spy))
    finally:
        server.stop()
    return row


def table(rows: list[Row]) -> str:
    """The rows as a markdown table."""

    def num(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        "| mode | N | cold TTFT p50 ms | cold max | warm TTFT p50 ms | warm max "
        "| CPU s/turn cold | warm | both | of which Python | PG+Redis CPU s/turn "
        "| peak RSS MB | errors "
        "| rest of machine CPU s | headers p50 ms cold/warm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        store = None if r.store_cpu_s is None else r.store_cpu_s / (2 * r.n)
        headers = " / ".join(num(1000 * h, 1) for h in r.headers) if r.headers else "-"
        cells = [
            r.mode,
            str(r.n),
            *(num(r.ms(turns, how)) for turns in ("cold", "warm") for how in ("p50", "max")),
            *(num(r.cpu_per_turn(phase), 3) for phase in (0, 1, None)),
            num(r.python_cpu_s / (2 * r.n), 3),
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
    measured = [r for r in rows if r.mode in ("bare", "copilot")]
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
    )
    create_database(args.database_url, run.database)
    argv = [COPILOT, "fake-upstream", "--host", "127.0.0.1", "--port", str(port)]
    fake = Spawned.start("fake-upstream", argv, clean_env(), out)
    rows: list[Row] = []
    try:
        fake.wait_ready(run.fake_url + "/healthz")
        for n in args.n:
            for mode, measure in (("bare", run_bare), ("copilot", run_copilot)):
                print(f"-- {mode} N={n} ...", end=" ", flush=True)
                t0 = time.monotonic()
                try:
                    rows.append(measure(run, n))
                except Exception as exc:  # reported as a row of errors; the others still run
                    print(f"FAILED: {type(exc).__name__}: {exc}", end=" ")
                    rows.append(Row(mode, n, errors=2 * n))
                print(f"{time.monotonic() - t0:.1f}s, {rows[-1].errors} errors", flush=True)
        if args.profile:
            print(f"-- copilot N={args.profile} under py-spy ...", flush=True)
            rows.append(run_copilot(run, args.profile, resolve_py_spy()))
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
