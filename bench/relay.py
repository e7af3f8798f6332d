"""New chats measured three ways (the fake upstream directly, a minimal relay, `copilot serve`)
in three scenarios, one table each, plus the targets of issue #15.

    uv run python bench/relay.py                    # every scenario: about 15 min on 2 cores
    uv run python bench/relay.py --quick            # smoke run of every scenario, ~1-2 min
    uv run python bench/relay.py --scenarios burst --n 200,500      # one scenario
    uv run python bench/relay.py --scenarios open-loop --open-loop-rate 40   # no calibration
    uv run python bench/relay.py --titles off       # copilot without session titles
    uv run python bench/relay.py --scenarios burst --modes copilot --n 200 --profile
    uv run python bench/relay.py --scenarios burst --modes copilot --n 200 --tracing

Every chat is a new session whose reply is `--tokens` (300) tokens at `--rate` (100) tokens/s.

Scenarios:
- `burst`: N chats (`--n`, default 1, 50, 200, 500) start at once (`--ramp` spreads them), in
  the quiet harness: the load generator `bench/loadgen.py --client raw` (raw HTTP/1.1 on
  asyncio sockets, uvloop) and `copilot fake-upstream` (uvloop, httptools, raw ASGI), both as
  light as they can be.
- `busy`: the same bursts (`--busy-n`, default 200, 500) in the busy harness: what shares
  the server's cores on a busy host, which is when bursts arrive. The client is
  `bench/loadgen.py --client httpx` (one `httpx.AsyncClient` on the plain asyncio loop, each
  response read with `aiter_lines()`) and the fake upstream `bench/busy_upstream.py` (the same
  app mounted in Starlette on uvicorn's asyncio loop and h11). Measured at N = 200 on this
  2-core machine (upstream and relay rows, 2026-11-30): the client costs 0.020-0.025 s of CPU
  per 1k tokens against the raw client's 0.003-0.006 (4-7x), the fake upstream 0.009-0.011
  against 0.005 (about 2x); together about 3x the quiet harness's CPU (0.03 against 0.01 s
  per 1k tokens), about as much as the relay itself spends (0.03-0.04).
- `open-loop`: new chats arrive as a Poisson process (seeded: relay and copilot get the same
  arrival times) at a steady rate for `--open-loop-s` (60) seconds, quiet harness, relay and
  copilot only, at 50%, 80% and 95% (`--open-loop-loads`) of a calibrated rate: the arrival
  rate at which the relay's TTFT p99 is twice its p99 at a low rate (`calibrate`: 15 s probes
  on one relay, printed step by step; about 2-3 min). `--open-loop-rate R` gives the 100%
  rate and skips the calibration. A row ends when its last chat has ended.

Modes (the rows of a table):
- `upstream`: the load generator talks to the fake upstream directly (`POST /v1/messages`):
  the limit. The "server" is the fake upstream process.
- `relay`: `bench/minimal_relay.py` (FastAPI + `anthropic`, raw stream events turned into UI
  chunks; no database, no Redis, no retries, no titles): the floor any peer pays.
- `copilot`: `copilot serve` with Postgres and Redis of this machine (a bench database created
  for the run and dropped after it, a unique Redis key prefix) and the settings users get:
  session titles on (`--titles off` turns them off), one title request per new chat to the
  same fake upstream, made by copilot serve after the chat's first token.
- `copilot-traced` (`--tracing`, burst only): the same with Langfuse tracing on, exporting to
  a stand-in Langfuse (`app/devtools/langfuse_sink.py`) in a process of its own (its CPU is
  not charged to the server). The targets compare it with the `copilot` row of the same N:
  server CPU per 1k tokens and TTFT p50 within +5%.

Every row gets fresh processes: a fake upstream, the server (for relay and copilot), and the
load generator. They share the machine's cores. Each server gets two warm-up chats first.

Columns: "headers" = time to the response's status line (for copilot, the turn's start-up
work: lease, user message, turn row); TTFT = from opening the connection to the first text
delta, over the chats that got one; tokens/s = all text tokens received / wall time of the
run; CPU = user+system seconds (children included) from the load generator's start signal to
0.5 s after its last stream ended, per 1,000 tokens received: of the server process alone, of
server + fake upstream, and (copilot) of the Postgres backends of the bench database plus the
redis-server (shared with anything else using it); "server, titles incl." = the server's CPU
to the moment every title of the row is stored (burst rows of copilot with titles on: the
wait is up to `--titles-wait`, 120 s, and ends early once no title came for 5 s; the
"titles" column gives how many were stored and how long after the last stream); on open-loop
rows the window ends with the last stream (titles made meanwhile are in it, a backlog left is
visible as titles < chats). peak RSS of the server process tree, sampled every 50 ms; errors
= chats without HTTP 200, end marker and exactly `--tokens` words; persisted (copilot) =
assistant messages `complete` with exactly `--tokens` words whose turn is `completed`,
checked in SQL after the run; client start lag (open loop) = how late the load generator
started a chat against its schedule (large values mean the client, not the server, was the
bottleneck); loadgen / fake CPU = those processes' CPU per 1k tokens (the harness's weight);
host busy % = the whole machine during the run; other procs CPU = the machine's busy CPU not
charged to this run's processes (other users of the machine, kernel network work, Postgres
background writers, py-spy in a profiled run): the noise indicator.

Ratios and targets use the server-process CPU (titles included). Targets (issue #15): at
N = 200 and 500, in both harnesses, copilot's TTFT p50 and p99 at most the relay's and its
CPU per 1k tokens at most 0.8x the relay's; copilot at N = 500 with zero errors and every
reply persisted; open-loop TTFT p99 at 80% load at most the relay's.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
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
from report import HARNESS, SCENARIOS, Run, problem_lines, render_table, target_lines
from servers import BENCH, MODES, Bench, clean_env, start_servers, warm_up
from storage import (
    clear_redis,
    create_database,
    drop_database,
    persisted_replies,
    titled_sessions,
    wait_for_titles,
)

SETTLE_S = 0.5
TITLES_WAIT_S = 120.0  # burst rows: the longest wait for the titles after the last stream


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def drive(bench: Bench, run: Run, url: str, fake: Spawned, server: Spawned, logs: Path) -> None:
    """Run the load generator of `run`'s scenario against `url` and fill `run` with what was
    measured."""
    args = bench.args
    timeout = 120 + 3 * args.tokens / args.rate
    client = "httpx" if HARNESS.get(run.scenario) == "busy" else "raw"
    argv = [sys.executable, str(BENCH / "loadgen.py"), "--url", url, "--kind", MODES[run.mode]]
    argv += ["--client", client, "--tokens", str(args.tokens), "--rate", str(args.rate)]
    argv += ["--prefix", prefix(bench, run), "--timeout", str(timeout)]
    if run.arrival_rate is not None:
        duration = run.duration_s or 0.0
        argv += ["--arrival-rate", f"{run.arrival_rate:.4f}", "--duration", f"{duration:g}"]
        argv += ["--seed", str(args.seed)]
        deadline = timeout + duration + 60
    else:
        argv += ["--n", str(run.n), "--ramp", str(args.ramp)]
        deadline = timeout + args.ramp + 60
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
        _drive(bench, run, loadgen, deadline, fake, server, logs)
    finally:
        if loadgen.poll() is None:
            loadgen.kill()
            loadgen.wait()


def _drive(
    bench: Bench,
    run: Run,
    loadgen: subprocess.Popen[bytes],
    deadline: float,
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
    titles = run.mode.startswith("copilot") and args.titles == "on" and bench.database
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
            out, _ = loadgen.communicate(b"GO\n", timeout=deadline)
        except subprocess.TimeoutExpired:
            raise RuntimeError("load generator overran its deadline") from None
        time.sleep(SETTLE_S)
        run.cpu_server_s = cpu_seconds([server_proc]) - server0
        run.cpu_fake_s = cpu_seconds([fake_proc]) - fake0
        run.host_busy_pct = psutil.cpu_percent()
        run.cpu_host_s = host_busy_seconds() - host0
        if store is not None:
            run.cpu_store_s = store.end()
        if titles and loadgen.returncode == 0 and out.strip():
            chats = len(orjson.loads(out)["streams"])
            if run.scenario == "open-loop" or run.scenario == "calibration":
                # Open loop: what the server titled while the chats came (no wait; a backlog
                # left at the end is visible as titles < chats).
                run.titles = titled_sessions(bench.database_url, prefix(bench, run))
            else:
                t0 = time.monotonic()
                run.titles = wait_for_titles(
                    bench.database_url, prefix(bench, run), chats, args.titles_wait
                )
                run.titles_after_s = time.monotonic() - t0 + SETTLE_S
                run.cpu_server_titles_s = cpu_seconds([server_proc]) - server0
    run.peak_rss_mb = rss.peak / 2**20
    if loadgen.returncode != 0 or not out.strip():
        raise RuntimeError(f"load generator failed ({loadgen.returncode}): see {logs}/loadgen.log")
    report = orjson.loads(out)
    streams = report["streams"]
    run.n = len(streams)
    run.wall_s = report["wall_s"]
    run.cpu_loadgen_s = report["cpu_s"]
    run.tokens = sum(s["tokens"] for s in streams)
    ttfts = [1000 * s["ttft_s"] for s in streams if s["ttft_s"] is not None]
    run.ttft_p50_ms, run.ttft_p99_ms = percentile(ttfts, 50), percentile(ttfts, 99)
    run.ttfb_p50_ms = percentile([1000 * s["ttfb_s"] for s in streams if s["ttfb_s"]], 50)
    run.lag_p99_ms = percentile([1000 * s["lag_s"] for s in streams], 99)
    failed = [s for s in streams if not s["ok"]]
    run.errors = len(failed)
    run.error_samples = sorted({str(s["error"]) for s in failed})[:5]


def host_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def prefix(bench: Bench, run: Run) -> str:
    """Session id prefix of a run's chats."""
    if run.load_pct is not None:
        load = f"o{run.load_pct}"
    elif run.arrival_rate is not None:
        load = f"c{run.arrival_rate:.0f}"
    else:
        load = f"{run.scenario}{run.n}"
    return f"b{bench.run_id}-{run.mode}-{load}{'p' if run.profiled else ''}"


@contextlib.contextmanager
def servers(
    bench: Bench, mode: str, harness: str, logs: Path
) -> Iterator[tuple[Spawned, Spawned, str]]:
    """The fake upstream and the server of a row (or of the calibration), warmed up."""
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[Spawned] = []
    try:
        fake, server, url = start_servers(bench, mode, logs, procs, harness)
        warm_up(MODES[mode], url, f"b{bench.run_id}-{logs.name}")
        yield fake, server, url
    finally:
        for proc in reversed(procs):
            proc.stop()


def measure(bench: Bench, run: Run) -> Run:
    """Start the processes of one row, measure, stop them."""
    run.code = code_version(bench.args.app_dir)
    name = f"{run.scenario}-{run.mode}-{run.load_pct or run.n}"
    logs = bench.out / f"{name}{'-profiled' if run.profiled else ''}"
    with servers(bench, run.mode, HARNESS[run.scenario], logs) as (fake, server, url):
        drive(bench, run, url, fake, server, logs)
    if run.mode.startswith("copilot"):
        run.persisted, run.persist_problems = persisted_replies(
            bench.database_url, prefix(bench, run), run.n, bench.args.tokens
        )
    if run.profiled and (logs / "profile.txt").exists():
        run.hotspots = analyse((logs / "profile.txt").read_text(errors="replace"))
    return run


def measure_or_fail(bench: Bench, run: Run) -> Run:
    """`measure`, or the row marked failed (all its chats errors) saying why."""
    try:
        return measure(bench, run)
    except Exception as exc:  # a broken run is reported in the table, the others still run
        print(f"FAILED: {type(exc).__name__}: {exc}", flush=True)
        run.errors = run.n or 1
        run.error_samples = [f"{type(exc).__name__}: {exc}"[:300]]
        return run


def probe_line(run: Run) -> str:
    """One calibration step."""
    return (
        f"{run.arrival_rate:.1f}/s for {run.duration_s:g}s: {run.n} chats, TTFT p50 "
        f"{_ms(run.ttft_p50_ms)} p99 {_ms(run.ttft_p99_ms)} ms, {run.errors} errors, "
        f"relay CPU/1k {_ms(run.per_1k(run.cpu_server_s), 3)} s, client lag p99 "
        f"{_ms(run.lag_p99_ms)} ms, host busy {run.host_busy_pct:.0f}%"
    )


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def calibrate(bench: Bench) -> tuple[float | None, list[Run]]:
    """The arrival rate at which the relay's TTFT p99 is twice its p99 at a low rate.

    One relay (quiet harness) takes every probe of `--probe-s` seconds: two at the low rate
    (`--open-loop-base`; the lower p99 of the two sets the threshold), then twice the rate
    each step until p99 reaches twice the low rate's (or a probe has errors), then (full
    runs) one probe at the geometric middle of the last bracket; the rate is interpolated (p99
    linear in log rate) inside the final bracket. At most `--probe-steps` doublings; if p99
    never doubles, the highest rate probed is used (and said so).
    """
    args = bench.args
    probes: list[Run] = []
    logs = bench.out / "calibration"

    with servers(bench, "relay", "quiet", logs) as (fake, server, url):

        def probe(rate: float, seconds: float) -> Run:
            run = Run("relay", 0, scenario="calibration", arrival_rate=rate)
            run.duration_s = seconds
            run.code = code_version(args.app_dir)
            drive(bench, run, url, fake, server, logs)
            probes.append(run)
            print(f"   calibration {len(probes)}: {probe_line(run)}", flush=True)
            time.sleep(1.0)
            return run

        # Two probes at the low rate: the lower p99 sets the threshold (one stall of the
        # machine in a probe of a few dozen chats would otherwise set it).
        bases = [probe(args.open_loop_base, args.probe_s) for _ in range(2)]
        base = min(bases, key=lambda r: (r.errors, r.ttft_p99_ms or math.inf))
        if base.ttft_p99_ms is None or base.errors:
            print("   calibration: the low rate failed; no open-loop rate", flush=True)
            return None, probes
        threshold = 2 * base.ttft_p99_ms
        print(f"   calibration: threshold TTFT p99 {threshold:.1f} ms (2x the low rate's)")

        def over(run: Run) -> bool:
            return bool(run.errors) or (run.ttft_p99_ms or 0) >= threshold

        below, above = base, None
        rate = 2 * args.open_loop_base
        for _ in range(args.probe_steps):
            run = probe(rate, args.probe_s)
            if over(run):
                above = run
                break
            below, rate = run, 2 * rate
        if above is None:
            highest = below.arrival_rate or 0.0
            print(f"   calibration: p99 never doubled; using the highest rate, {highest:.1f}/s")
            return below.arrival_rate, probes
        if not args.quick:
            middle = math.sqrt((below.arrival_rate or 0.0) * (above.arrival_rate or 0.0))
            middle_run = probe(middle, args.probe_s)
            below, above = (below, middle_run) if over(middle_run) else (middle_run, above)
    return interpolate(below, above, threshold), probes


def interpolate(below: Run, above: Run, threshold: float) -> float:
    """The rate at which p99 crosses `threshold`, p99 taken as linear in log rate between
    the two probes (the lower rate when the upper one only failed with errors)."""
    lo, hi = below.arrival_rate or 0.0, above.arrival_rate or 0.0
    p_lo, p_hi = below.ttft_p99_ms or 0.0, above.ttft_p99_ms or 0.0
    if p_hi <= p_lo or p_hi < threshold:
        return lo
    share = min(1.0, max(0.0, (threshold - p_lo) / (p_hi - p_lo)))
    return float(lo * (hi / lo) ** share)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma separated, of {','.join(SCENARIOS)} (all)",
    )
    parser.add_argument("--n", help="burst: concurrent chats, comma separated (1,50,200,500)")
    parser.add_argument("--busy-n", help="busy: concurrent chats (200,500; --n when given)")
    parser.add_argument("--tokens", type=int, help="tokens per reply (300)")
    parser.add_argument("--rate", type=float, default=100, help="tokens per second per reply")
    parser.add_argument("--modes", default="upstream,relay,copilot")
    parser.add_argument(
        "--titles",
        choices=("on", "off"),
        default="on",
        help="copilot serve's title generation (on: what users get)",
    )
    parser.add_argument(
        "--titles-wait",
        type=float,
        default=TITLES_WAIT_S,
        help="burst rows: longest wait for the titles after the last stream, seconds",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=10, 100-token replies, open loop of 5 s at 80%% only after a "
        "calibration of 3 s probes (at most 2 doublings), unless given",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="burst: seconds over which the N chats start (0: all at once)",
    )
    parser.add_argument(
        "--open-loop-s", type=float, help="open loop: seconds of arrivals per row (60)"
    )
    parser.add_argument(
        "--open-loop-rate",
        type=float,
        help="open loop: the 100%% rate in new chats/s (skips the calibration)",
    )
    parser.add_argument(
        "--open-loop-loads", help="open loop: %% of the calibrated rate (50,80,95; quick: 80)"
    )
    parser.add_argument(
        "--open-loop-base", type=float, default=5.0, help="calibration: the low rate, chats/s"
    )
    parser.add_argument("--probe-s", type=float, help="calibration: seconds per probe (15)")
    parser.add_argument(
        "--probe-steps", type=int, help="calibration: most doublings of the rate (6)"
    )
    parser.add_argument("--seed", type=int, default=1, help="open loop: the arrivals' seed")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="burst: after the copilot run at --profile-n, one more with py-spy attached",
    )
    parser.add_argument("--profile-n", type=int, default=200)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="burst: also run copilot with Langfuse tracing on (mode copilot-traced) after "
        "each copilot row, against a local stand-in Langfuse",
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
    args.scenario_list = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    if set(args.scenario_list) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {sorted(set(args.scenario_list) - set(SCENARIOS))}")
    if args.busy_n is None:
        args.busy_n = args.n or ("10" if args.quick else "200,500")
    if args.n is None:
        args.n = "10" if args.quick else "1,50,200,500"
    if args.tokens is None:
        args.tokens = 100 if args.quick else 300
    if args.open_loop_s is None:
        args.open_loop_s = 5.0 if args.quick else 60.0
    if args.open_loop_loads is None:
        args.open_loop_loads = "80" if args.quick else "50,80,95"
    if args.probe_s is None:
        args.probe_s = 3.0 if args.quick else 15.0
    if args.probe_steps is None:
        args.probe_steps = 2 if args.quick else 6
    args.n_list = [int(x) for x in args.n.split(",") if x.strip()]
    args.busy_n_list = [int(x) for x in args.busy_n.split(",") if x.strip()]
    args.load_list = [int(x) for x in args.open_loop_loads.split(",") if x.strip()]
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
        f"{args.tokens} tokens at {args.rate:g} tokens/s per chat; scenarios "
        f"{','.join(args.scenario_list)}; modes {','.join(args.mode_list)}; copilot titles "
        f"{args.titles}; burst N = {args.n} "
        f"({'at once' if not args.ramp else f'over {args.ramp}s'}), busy N = {args.busy_n}, "
        f"open loop {args.open_loop_s:g} s at {args.open_loop_loads}% of "
        f"{f'{args.open_loop_rate:g}/s' if args.open_loop_rate else 'the calibrated rate'}; "
        "fresh fake upstream + server + load generator processes per row, 2 warm-up chats"
    )


def plan(bench: Bench, scenario: str) -> list[Run]:
    """The rows of a burst scenario, in order (each N: every mode)."""
    args = bench.args
    ns = args.n_list if scenario == "burst" else args.busy_n_list
    modes = [m for m in args.mode_list if scenario == "burst" or m != "copilot-traced"]
    return [Run(mode, n, scenario=scenario) for n in ns for mode in modes]


def run_row(bench: Bench, run: Run) -> Run:
    """Measure one row, saying so."""
    print(f"-- {run.scenario} {run.label} {run.load} ...", end=" ", flush=True)
    t0 = time.monotonic()
    measure_or_fail(bench, run)
    print(f"{time.monotonic() - t0:.1f}s, {run.errors} errors", flush=True)
    return run


def run_scenarios(bench: Bench, runs: list[Run], probes: list[Run]) -> float | None:
    """Every row of every scenario asked for; the open-loop rate used (None: none)."""
    args = bench.args
    rate: float | None = None
    for scenario in args.scenario_list:
        if scenario != "open-loop":
            for run in plan(bench, scenario):
                runs.append(run_row(bench, run))
                last = [m for m in args.mode_list if m != "copilot-traced"][-1]
                if (
                    scenario == "burst"
                    and bench.py_spy
                    and run.n == args.profile_n
                    and run.mode == last
                ):
                    runs.append(run_row(bench, Run("copilot", run.n, profiled=True)))
            continue
        rate = args.open_loop_rate
        if rate is None:
            print("-- open-loop calibration (relay) ...", flush=True)
            rate, found = calibrate(bench)
            probes.extend(found)
            if rate is None:
                continue
            print(f"   calibrated rate: {rate:.1f} new chats/s", flush=True)
        modes = [m for m in args.mode_list if m in ("relay", "copilot")]
        for pct in args.load_list:
            for mode in modes:
                run = Run(mode, 0, scenario=scenario, arrival_rate=rate * pct / 100, load_pct=pct)
                run.duration_s = args.open_loop_s
                runs.append(run_row(bench, run))
    return rate


def main(argv: list[str] | None = None) -> int:
    """Run every scenario, print a table per scenario and the targets."""
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
    if args.profile and "copilot" in args.mode_list and "burst" in args.scenario_list:
        bench.py_spy = resolve_py_spy()
    runs: list[Run] = []
    probes: list[Run] = []
    rate: float | None = None
    try:
        rate = run_scenarios(bench, runs, probes)
    finally:
        if bench.database and not args.keep_db:
            drop_database(args.database_url, bench.database)
        if bench.database:
            clear_redis(args.redis_url, f"copilot-bench-{run_id}")
    elapsed = time.monotonic() - began
    (out / "results.json").write_bytes(
        orjson.dumps(
            {
                "runs": [asdict(r) for r in runs],
                "calibration": [asdict(r) for r in probes],
                "open_loop_rate": rate,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    for scenario in args.scenario_list:
        print(f"\n### {scenario} ({HARNESS[scenario]} harness)\n")
        if scenario == "open-loop":
            for i, probe in enumerate(probes, 1):
                print(f"calibration {i}: {probe_line(probe)}")
            how = "given" if args.open_loop_rate else "calibrated"
            print(f"100% = {_ms(rate)} new chats/s ({how}); loads {args.open_loop_loads}%\n")
        print(render_table(runs, scenario))
    print()
    for line in problem_lines(runs + probes):
        print(line)
    for line in target_lines(runs, args.scenario_list):
        print(line)
    for run in runs:
        if run.hotspots:
            print(f"\nHotspots of copilot serve, N={run.n} (py-spy, {out}):\n{run.hotspots}")
    print(f"\ntotal time {elapsed:.0f}s; logs and results.json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
