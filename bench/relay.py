"""N concurrent chats measured three ways: at the fake upstream, through a minimal relay, and
through `copilot serve`.

    uv run python bench/relay.py                    # N = 1,50,200,500; 300 tokens at 100/s
    uv run python bench/relay.py --quick            # smoke run, well under a minute
    uv run python bench/relay.py --modes copilot --n 200 --profile    # plus a py-spy run
    uv run python bench/relay.py --modes copilot --n 200 --tracing    # tracing off vs on

Modes (each row of the table):
- `upstream`: the load generator talks to the fake upstream directly (`POST /v1/messages`):
  the limit. The "server" is the fake upstream process.
- `relay`: `bench/minimal_relay.py` (FastAPI + `anthropic`, raw stream events turned into UI
  chunks; no database, no Redis, no retries): the floor any peer pays.
- `copilot`: `copilot serve` with Postgres and Redis of this machine (a bench database created
  for the run and dropped after it, a unique Redis key prefix, title generation off).
- `copilot-traced` (`--tracing` adds it after `copilot`): the same with Langfuse tracing on,
  exporting to a stand-in Langfuse (`app/devtools/langfuse_sink.py`) in a process of its own
  that takes every batch (its CPU is not charged to the server). The targets compare it with
  the `copilot` row of the same N: server CPU per 1k tokens and TTFT p50 within +5%.

Every (mode, N) gets fresh processes: a fake upstream (`copilot fake-upstream`), the server
(for relay and copilot), and the load generator (`bench/loadgen.py`, raw asyncio sockets on
uvloop). They share the machine's cores. Each server gets two warm-up chats before the
measurement. All N chats start at once (`--ramp` spreads them).

Columns: "headers" = time to the response's status line (for copilot, the turn's start-up
work: lease, user message, turn row); TTFT = from opening the connection to the first text
delta, over the chats that got one; tokens/s = all text tokens received / wall time of the
run; CPU = user+system seconds (children included) from the load generator's start signal to
0.5 s after its last stream ended, per 1,000 tokens received: of the server process alone, of
server + fake upstream, and (copilot) of the Postgres backends of the bench database plus the
redis-server (shared with anything else using it); peak RSS of the server process tree,
sampled every 50 ms; errors = chats without HTTP 200, end marker and exactly `--tokens` words;
persisted (copilot) = assistant messages `complete` with exactly `--tokens` words whose turn
is `completed`, checked in SQL after the run; loadgen CPU = the load generator's own CPU;
host busy % = the whole machine during the run; other procs CPU = the machine's busy CPU
not charged to this run's processes (other users of the machine, kernel network work,
Postgres background writers, py-spy in a profiled run): the noise indicator.
Ratios and targets use the server-process CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil
from measure import (
    CpuByPid,
    RssSampler,
    Spawned,
    code_version,
    cpu_seconds,
    postgres_backends,
    redis_server,
)
from profiling import analyse, recording, resolve_py_spy
from report import Run, problem_lines, render_table, target_lines
from servers import BENCH, MODES, Bench, clean_env, start_servers, warm_up
from storage import (
    clear_redis,
    create_database,
    drop_database,
    persisted_replies,
)

SETTLE_S = 0.5


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def drive(bench: Bench, run: Run, url: str, fake: Spawned, server: Spawned, logs: Path) -> None:
    """Run the load generator against `url` and fill `run` with what was measured."""
    args = bench.args
    timeout = 120 + 3 * args.tokens / args.rate
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--url", url, "--kind", MODES[run.mode]]
    argv += ["--n", str(run.n), "--tokens", str(args.tokens), "--rate", str(args.rate)]
    argv += ["--prefix", prefix(bench, run), "--ramp", str(args.ramp), "--timeout", str(timeout)]
    with open(logs / "loadgen.log", "ab") as err:
        loadgen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=BENCH.parent,
            env=bench.env,
        )
    try:
        _drive(bench, run, loadgen, timeout, fake, server, logs)
    finally:
        if loadgen.poll() is None:
            loadgen.kill()
            loadgen.wait()


def _drive(
    bench: Bench,
    run: Run,
    loadgen: subprocess.Popen[bytes],
    timeout: float,
    fake: Spawned,
    server: Spawned,
    logs: Path,
) -> None:
    args = bench.args
    assert loadgen.stdout is not None
    if loadgen.stdout.readline().strip() != b"READY":
        raise RuntimeError(f"load generator did not start: see {logs / 'loadgen.log'}")
    server_proc, fake_proc = psutil.Process(server.pid), psutil.Process(fake.pid)
    store = None
    if run.mode.startswith("copilot") and bench.database:
        port = urlsplit(args.redis_url).port or 6379
        database = bench.database
        store = CpuByPid(lambda: postgres_backends(database) + redis_server(port))
    spy: Any = contextlib.nullcontext()
    if run.profiled and bench.py_spy:
        spy = recording(bench.py_spy, server.pid, logs, bench.env)
    with spy, RssSampler(server.pid) as rss:
        psutil.cpu_percent()
        host0 = host_busy_seconds()
        server0, fake0 = cpu_seconds([server_proc]), cpu_seconds([fake_proc])
        if store is not None:
            store.begin()
        try:
            out, _ = loadgen.communicate(b"GO\n", timeout=timeout + args.ramp + 60)
        except subprocess.TimeoutExpired:
            raise RuntimeError("load generator overran its deadline") from None
        time.sleep(SETTLE_S)
        run.cpu_server_s = cpu_seconds([server_proc]) - server0
        run.cpu_fake_s = cpu_seconds([fake_proc]) - fake0
        run.host_busy_pct = psutil.cpu_percent()
        run.cpu_host_s = host_busy_seconds() - host0
        if store is not None:
            run.cpu_store_s = store.end()
    run.peak_rss_mb = rss.peak / 2**20
    if loadgen.returncode != 0 or not out.strip():
        raise RuntimeError(f"load generator failed ({loadgen.returncode}): see {logs}/loadgen.log")
    report = orjson.loads(out)
    streams = report["streams"]
    run.wall_s = report["wall_s"]
    run.cpu_loadgen_s = report["cpu_s"]
    run.tokens = sum(s["tokens"] for s in streams)
    ttfts = [1000 * s["ttft_s"] for s in streams if s["ttft_s"] is not None]
    run.ttft_p50_ms, run.ttft_p99_ms = percentile(ttfts, 50), percentile(ttfts, 99)
    run.ttfb_p50_ms = percentile([1000 * s["ttfb_s"] for s in streams if s["ttfb_s"]], 50)
    failed = [s for s in streams if not s["ok"]]
    run.errors = len(failed)
    run.error_samples = sorted({str(s["error"]) for s in failed})[:5]


def host_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def prefix(bench: Bench, run: Run) -> str:
    """Session id prefix of a run's chats."""
    return f"b{bench.run_id}-{run.mode}{run.n}{'p' if run.profiled else ''}"


def measure(bench: Bench, mode: str, n: int, profiled: bool = False) -> Run:
    """Start the processes of one (mode, N), measure, stop them."""
    run = Run(mode, n, profiled=profiled, code=code_version(bench.args.app_dir))
    logs = bench.out / f"{mode}-n{n}{'-profiled' if profiled else ''}"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[Spawned] = []
    try:
        fake, server, url = start_servers(bench, mode, logs, procs)
        warm_up(MODES[mode], url, prefix(bench, run))
        drive(bench, run, url, fake, server, logs)
    finally:
        for proc in reversed(procs):
            proc.stop()
    if mode.startswith("copilot"):
        run.persisted, run.persist_problems = persisted_replies(
            bench.database_url, prefix(bench, run), n, bench.args.tokens
        )
    if profiled and (logs / "profile.txt").exists():
        run.hotspots = analyse((logs / "profile.txt").read_text(errors="replace"))
    return run


def measure_or_fail(bench: Bench, mode: str, n: int, profiled: bool = False) -> Run:
    """`measure`, or a row of n errors saying why it could not be made."""
    try:
        return measure(bench, mode, n, profiled)
    except Exception as exc:  # a broken run is reported in the table, the others still run
        print(f"FAILED: {type(exc).__name__}: {exc}", flush=True)
        return Run(
            mode,
            n,
            errors=n,
            error_samples=[f"{type(exc).__name__}: {exc}"[:300]],
            profiled=profiled,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", help="concurrent chats, comma separated (1,50,200,500)")
    parser.add_argument("--tokens", type=int, help="tokens per reply (300)")
    parser.add_argument("--rate", type=float, default=100, help="tokens per second per reply")
    parser.add_argument("--modes", default="upstream,relay,copilot")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: N=1,10 and 100-token replies unless given"
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="seconds over which the N chats start (0: all at once)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the copilot run at --profile-n, one more with py-spy attached",
    )
    parser.add_argument("--profile-n", type=int, default=200)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also run copilot with Langfuse tracing on (mode copilot-traced) after each "
        "copilot row, against a local stand-in Langfuse",
    )
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
        help="extra environment of copilot serve (repeatable)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="logs, profiles and results.json (default: a new temp dir)",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=BENCH.parent,
        help="run copilot serve and the fake upstream from this source tree (e.g. a "
        "`git archive` snapshot) with this checkout's virtualenv; default: this checkout",
    )
    args = parser.parse_args(argv)
    args.app_dir = args.app_dir.resolve()
    if not (args.app_dir / "app" / "cli.py").is_file():
        parser.error(f"--app-dir {args.app_dir} has no app/cli.py")
    if args.n is None:
        args.n = "1,10" if args.quick else "1,50,200,500"
    if args.tokens is None:
        args.tokens = 100 if args.quick else 300
    args.n_list = [int(x) for x in args.n.split(",") if x.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.tracing and "copilot-traced" not in args.mode_list:
        at = args.mode_list.index("copilot") + 1 if "copilot" in args.mode_list else None
        args.mode_list.insert(at if at is not None else len(args.mode_list), "copilot-traced")
    unknown = set(args.mode_list) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {sorted(unknown)}")
    for url in (args.database_url, args.redis_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            parser.error(f"only loopback services: {url}")
    return args


def header(args: argparse.Namespace) -> str:
    """What ran where."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), cpu)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{psutil.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"load average {load}; code: {code_version(args.app_dir)}\n"
        f"{args.tokens} tokens at {args.rate:g} tokens/s per chat; N = {args.n}; modes "
        f"{','.join(args.mode_list)}; chats start "
        f"{'at once' if not args.ramp else f'over {args.ramp}s'}; "
        "fresh fake upstream + server + load generator processes per row, 2 warm-up chats"
    )


def main(argv: list[str] | None = None) -> int:
    """Run every (N, mode), print the table and the targets."""
    args = parse_args(argv)
    began = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    out = args.out or Path(tempfile.mkdtemp(prefix=f"copilot-bench-{run_id}-"))
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, run_id, out, clean_env())
    print(header(args), flush=True)
    if any(m.startswith("copilot") for m in args.mode_list):
        bench.database = f"copilot_bench_{run_id}"
        create_database(args.database_url, bench.database)
    if args.profile and "copilot" in args.mode_list:
        bench.py_spy = resolve_py_spy()
    runs: list[Run] = []
    try:
        for n in args.n_list:
            for mode in args.mode_list:
                print(f"-- {mode} N={n} ...", end=" ", flush=True)
                t0 = time.monotonic()
                runs.append(measure_or_fail(bench, mode, n))
                print(f"{time.monotonic() - t0:.1f}s, {runs[-1].errors} errors", flush=True)
            if bench.py_spy and n == args.profile_n:
                print(f"-- copilot N={n} with py-spy ...", end=" ", flush=True)
                runs.append(measure_or_fail(bench, "copilot", n, profiled=True))
                print("done", flush=True)
    finally:
        if bench.database and not args.keep_db:
            drop_database(args.database_url, bench.database)
        if bench.database:
            clear_redis(args.redis_url, f"copilot-bench-{run_id}")
    elapsed = time.monotonic() - began
    (out / "results.json").write_bytes(
        orjson.dumps([asdict(r) for r in runs], option=orjson.OPT_INDENT_2)
    )
    print()
    print(render_table(runs))
    print()
    for line in problem_lines(runs):
        print(line)
    for line in target_lines(runs):
        print(line)
    for run in runs:
        if run.hotspots:
            print(f"\nHotspots of copilot serve, N={run.n} (py-spy, {out}):\n{run.hotspots}")
    print(f"\ntotal time {elapsed:.0f}s; logs and results.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
