"""What bench/relay.py measured in one row, the markdown tables, and the targets.

A row is a (scenario, mode, load): `burst` and `busy` rows are N chats at once in the quiet
and the busy harness, `open-loop` rows a Poisson arrival rate at a share of the calibrated
rate. Copilot rows are compared with the relay row of the same scenario and load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SCENARIOS = ("burst", "busy", "open-loop")
HARNESS = {"burst": "quiet", "busy": "busy", "open-loop": "quiet"}
TARGET_STREAMS = 500
BURST_TARGET_N = (200, 500)  # the N the burst targets are checked at, in both harnesses
CPU_TARGET = 0.8  # copilot's CPU per token at most 0.8x the relay's
OPEN_LOOP_TARGET_PCT = 80  # open-loop TTFT p99 at most the relay's at 80% load


@dataclass
class Run:
    """One row of a table."""

    mode: str
    n: int
    scenario: str = "burst"
    arrival_rate: float | None = None  # open loop: new chats per second
    load_pct: int | None = None  # open loop: share of the calibrated rate
    duration_s: float | None = None  # open loop: how long new chats arrive
    wall_s: float = 0.0
    ttfb_p50_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    lag_p99_ms: float | None = None  # the client's start lag (open loop)
    tokens: int = 0
    cpu_server_s: float = 0.0
    cpu_server_titles_s: float | None = None  # to the last title stored (copilot, titles on)
    titles: int | None = None
    titles_after_s: float | None = None  # from the last stream's end to the last title
    cpu_fake_s: float = 0.0
    cpu_store_s: float | None = None
    cpu_loadgen_s: float = 0.0
    host_busy_pct: float = 0.0
    cpu_host_s: float = 0.0
    peak_rss_mb: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    persisted: int | None = None
    persist_problems: list[str] = field(default_factory=list)
    profiled: bool = False
    hotspots: str | None = None
    code: str = ""

    def per_1k(self, seconds: float | None) -> float | None:
        """CPU seconds per 1,000 tokens received."""
        if seconds is None or not self.tokens:
            return None
        return 1000 * seconds / self.tokens

    @property
    def cpu_server_all_s(self) -> float:
        """The server's CPU for the row's chats, their titles included when it made them."""
        return self.cpu_server_s if self.cpu_server_titles_s is None else self.cpu_server_titles_s

    @property
    def tok_s(self) -> float:
        """Tokens received per second of wall time."""
        return self.tokens / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_total_s(self) -> float:
        """Server plus fake upstream (in upstream mode the fake is the server)."""
        return self.cpu_server_s if self.mode == "upstream" else self.cpu_server_s + self.cpu_fake_s

    @property
    def cpu_others_s(self) -> float:
        """Busy CPU of the machine not spent by this run's processes (other users, noise)."""
        ours = self.cpu_total_s + self.cpu_loadgen_s + (self.cpu_store_s or 0.0)
        return max(0.0, self.cpu_host_s - ours)

    @property
    def label(self) -> str:
        """The mode, marked when py-spy was attached."""
        return f"{self.mode} (py-spy)" if self.profiled else self.mode

    @property
    def load(self) -> str:
        """The row's load: N, or the open-loop share and rate."""
        if self.load_pct is None:
            return str(self.n)
        chats = f", {self.n} chats" if self.n else ""
        return f"{self.load_pct}% ({self.arrival_rate:.1f}/s{chats})"

    @property
    def key(self) -> tuple[str, int]:
        """What a copilot row is compared on: scenario and N, or scenario and load share."""
        return (self.scenario, self.n if self.load_pct is None else self.load_pct)


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def _x(value: float | Run | None) -> str:
    """A ratio (None, or no row to compare with: "-")."""
    return "-" if value is None or isinstance(value, Run) else f"{value:.2f}x"


def _find(runs: list[Run], mode: str, key: tuple[str, int]) -> Run | None:
    return next((r for r in runs if r.mode == mode and r.key == key and not r.profiled), None)


def _cpu(run: Run) -> float | None:
    return run.per_1k(run.cpu_server_all_s)


def _titles(run: Run) -> str:
    if run.titles is None:
        return "-"
    after = "" if run.titles_after_s is None else f" (+{run.titles_after_s:.1f}s)"
    return f"{run.titles}/{run.n}{after}"


Column = tuple[str, Callable[[Run, Run | None], str]]

_COMMON: tuple[Column, ...] = (
    ("TTFT p50 ms", lambda r, _: _num(r.ttft_p50_ms, 1)),
    ("TTFT p99 ms", lambda r, _: _num(r.ttft_p99_ms, 1)),
    ("tokens/s", lambda r, _: _num(r.tok_s)),
    ("CPU s/1k tok (server)", lambda r, _: _num(r.per_1k(r.cpu_server_s), 3)),
    ("CPU s/1k tok (server, titles incl.)", lambda r, _: _num(_cpu(r), 3)),
    ("CPU s/1k tok (server+fake)", lambda r, _: _num(r.per_1k(r.cpu_total_s), 3)),
    ("CPU s/1k tok (pg+redis)", lambda r, _: _num(r.per_1k(r.cpu_store_s), 3)),
    ("peak RSS MB", lambda r, _: _num(r.peak_rss_mb)),
    ("errors", lambda r, _: str(r.errors)),
    ("persisted", lambda r, _: "-" if r.persisted is None else f"{r.persisted}/{r.n}"),
    ("titles", lambda r, _: _titles(r)),
    ("TTFT p50 copilot/relay", lambda r, b: _x(b and _ratio(r.ttft_p50_ms, b.ttft_p50_ms))),
    ("TTFT p99 copilot/relay", lambda r, b: _x(b and _ratio(r.ttft_p99_ms, b.ttft_p99_ms))),
    ("CPU/1k copilot/relay", lambda r, b: _x(b and _ratio(_cpu(r), _cpu(b)))),
)
_TAIL: tuple[Column, ...] = (
    ("loadgen CPU s/1k tok", lambda r, _: _num(r.per_1k(r.cpu_loadgen_s), 3)),
    ("fake CPU s/1k tok", lambda r, _: _num(r.per_1k(r.cpu_fake_s), 3)),
    ("host busy %", lambda r, _: _num(r.host_busy_pct)),
    ("other procs CPU s", lambda r, _: _num(r.cpu_others_s, 1)),
    ("wall s", lambda r, _: _num(r.wall_s, 1)),
    ("code", lambda r, _: r.code),
)
BURST_COLUMNS: tuple[Column, ...] = (
    ("mode", lambda r, _: r.label),
    ("N", lambda r, _: str(r.n)),
    ("headers p50 ms", lambda r, _: _num(r.ttfb_p50_ms, 1)),
    *_COMMON,
    *_TAIL,
)
OPEN_LOOP_COLUMNS: tuple[Column, ...] = (
    ("mode", lambda r, _: r.label),
    ("load (rate, chats)", lambda r, _: r.load),
    *_COMMON,
    ("client start lag p99 ms", lambda r, _: _num(r.lag_p99_ms, 1)),
    *_TAIL,
)


def render_table(runs: list[Run], scenario: str) -> str:
    """The markdown table of one scenario: a row per (mode, load), ratios on copilot rows."""
    columns = OPEN_LOOP_COLUMNS if scenario == "open-loop" else BURST_COLUMNS
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * len(columns)]
    for run in runs:
        if run.scenario != scenario:
            continue
        base = _find(runs, "relay", run.key) if run.mode.startswith("copilot") else None
        lines.append("| " + " | ".join(get(run, base) for _, get in columns) + " |")
    return "\n".join(lines)


def _check(
    name: str,
    copilot: Run | None,
    relay: Run | None,
    get: Callable[[Run], float | None],
    limit: float,
    unit: str,
    digits: int,
) -> str:
    if copilot is None or relay is None:
        return f"n/a   {name} (not measured)"
    ratio = _ratio(get(copilot), get(relay))
    ok = ratio is not None and ratio <= limit and copilot.errors == 0
    errors = f"; {copilot.errors} errors" if copilot.errors else ""
    return (
        f"{'PASS' if ok else 'MISS'}  {name}: {_num(get(copilot), digits)} {unit} vs "
        f"{_num(get(relay), digits)} {unit} = {'-' if ratio is None else f'{ratio:.2f}'}x{errors}"
    )


def target_lines(runs: list[Run], scenarios: list[str]) -> list[str]:
    """A PASS or MISS line per target of the scenarios run (n/a when a row is missing)."""
    out = []
    for scenario in scenarios:
        if scenario == "open-loop":
            key = (scenario, OPEN_LOOP_TARGET_PCT)
            out.append(
                _check(
                    f"copilot open-loop at {OPEN_LOOP_TARGET_PCT}% load: TTFT p99 at most the "
                    "relay's",
                    _find(runs, "copilot", key),
                    _find(runs, "relay", key),
                    lambda r: r.ttft_p99_ms,
                    1.0,
                    "ms",
                    1,
                )
            )
            continue
        harness = HARNESS[scenario]
        for n in BURST_TARGET_N:
            copilot, relay = (
                _find(runs, "copilot", (scenario, n)),
                _find(runs, "relay", (scenario, n)),
            )
            where = f"copilot {scenario} ({harness} harness) N={n}"
            if copilot is None or relay is None:
                out.append(f"n/a   {where}: TTFT p50, p99 and CPU targets (not measured)")
                continue
            out.append(
                _check(
                    f"{where}: TTFT p50 at most the relay's",
                    copilot,
                    relay,
                    lambda r: r.ttft_p50_ms,
                    1.0,
                    "ms",
                    1,
                )
            )
            out.append(
                _check(
                    f"{where}: TTFT p99 at most the relay's",
                    copilot,
                    relay,
                    lambda r: r.ttft_p99_ms,
                    1.0,
                    "ms",
                    1,
                )
            )
            out.append(
                _check(
                    f"{where}: CPU per 1k tokens (server, titles included) at most {CPU_TARGET}x "
                    "the relay's",
                    copilot,
                    relay,
                    _cpu,
                    CPU_TARGET,
                    "s",
                    3,
                )
            )
        big = _find(runs, "copilot", (scenario, TARGET_STREAMS))
        name = f"copilot {scenario} N={TARGET_STREAMS}: zero errors and every reply persisted"
        if big is None:
            out.append(f"n/a   {name} (not measured)")
        else:
            ok = big.errors == 0 and big.persisted == big.n
            out.append(
                f"{'PASS' if ok else 'MISS'}  {name}: {big.errors} errors, "
                f"{big.persisted}/{big.n} persisted"
            )
        if scenario == "burst":
            out.extend(tracing_lines(runs))
    return out


def problem_lines(runs: list[Run]) -> list[str]:
    """Error and persistence samples, one line each."""
    out = []
    for run in runs:
        for sample in run.error_samples:
            out.append(f"{run.scenario} {run.label} {run.load} error: {sample}")
        for sample in run.persist_problems:
            out.append(f"{run.scenario} {run.label} {run.load} not persisted: {sample}")
    return out


TRACING_TARGET = 1.05  # tracing on may cost at most 5% more CPU per turn and TTFT


def tracing_lines(runs: list[Run]) -> list[str]:
    """Per N measured both ways (burst, quiet harness): copilot with tracing on against
    copilot without."""
    out = []
    for traced in runs:
        if traced.mode != "copilot-traced" or traced.profiled or traced.scenario != "burst":
            continue
        plain = _find(runs, "copilot", traced.key)
        checks: tuple[tuple[str, Callable[[Run], float | None], str, int], ...] = (
            ("CPU per 1k tokens (server process)", lambda r: r.per_1k(r.cpu_server_s), "s", 3),
            ("TTFT p50", lambda r: r.ttft_p50_ms, "ms", 1),
        )
        for what, get, unit, digits in checks:
            name = f"copilot N={traced.n}: {what} with tracing within +5% of without"
            if plain is None:
                out.append(f"n/a   {name} (copilot not measured at this N)")
                continue
            ratio = _ratio(get(traced), get(plain))
            ok = ratio is not None and ratio <= TRACING_TARGET
            out.append(
                f"{'PASS' if ok else 'MISS'}  {name}: {_num(get(traced), digits)} {unit} vs "
                f"{_num(get(plain), digits)} {unit} = "
                f"{'-' if ratio is None else f'{ratio:.3f}'}x"
            )
    return out
