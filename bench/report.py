"""What bench/relay.py measured in one (mode, N) run, the markdown table, and the targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

TARGET_RATIO = 1.25
TARGET_STREAMS = 500
RATIO_AT = 200


@dataclass
class Run:
    """One row of the table."""

    mode: str
    n: int
    wall_s: float = 0.0
    ttfb_p50_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tokens: int = 0
    cpu_server_s: float = 0.0
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


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def _relay_at(runs: list[Run], n: int) -> Run | None:
    return next((r for r in runs if r.mode == "relay" and r.n == n and not r.profiled), None)


def _copilot_at(runs: list[Run], n: int) -> Run | None:
    return next((r for r in runs if r.mode == "copilot" and r.n == n and not r.profiled), None)


COLUMNS = (
    "mode",
    "N",
    "headers p50 ms",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "tokens/s",
    "CPU s/1k tok (server)",
    "CPU s/1k tok (server+fake)",
    "CPU s/1k tok (pg+redis)",
    "peak RSS MB",
    "errors",
    "persisted",
    "TTFT p50 copilot/relay",
    "CPU/1k copilot/relay",
    "loadgen CPU s",
    "host busy %",
    "other procs CPU s",
    "wall s",
    "code",
)


def render_table(runs: list[Run]) -> str:
    """The markdown table: a row per (mode, N), ratios on copilot rows."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for run in runs:
        relay = _relay_at(runs, run.n) if run.mode == "copilot" else None
        ttft_ratio = _ratio(run.ttft_p50_ms, relay.ttft_p50_ms) if relay else None
        cpu_ratio = (
            _ratio(run.per_1k(run.cpu_server_s), relay.per_1k(relay.cpu_server_s))
            if relay
            else None
        )
        persisted = "-" if run.persisted is None else f"{run.persisted}/{run.n}"
        cells = (
            run.label,
            str(run.n),
            _num(run.ttfb_p50_ms, 1),
            _num(run.ttft_p50_ms, 1),
            _num(run.ttft_p99_ms, 1),
            _num(run.tok_s),
            _num(run.per_1k(run.cpu_server_s), 3),
            _num(run.per_1k(run.cpu_total_s), 3),
            _num(run.per_1k(run.cpu_store_s), 3),
            _num(run.peak_rss_mb),
            str(run.errors),
            persisted,
            "-" if ttft_ratio is None else f"{ttft_ratio:.2f}x",
            "-" if cpu_ratio is None else f"{cpu_ratio:.2f}x",
            _num(run.cpu_loadgen_s, 2),
            _num(run.host_busy_pct),
            _num(run.cpu_others_s, 1),
            _num(run.wall_s, 1),
            run.code,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(runs: list[Run]) -> list[str]:
    """A PASS or MISS line per target (n/a when the runs it needs were not made)."""
    out = []
    big = _copilot_at(runs, TARGET_STREAMS)
    name = f"copilot N={TARGET_STREAMS}: zero errors and every reply persisted"
    if big is None:
        out.append(f"n/a   {name} (not measured)")
    else:
        ok = big.errors == 0 and big.persisted == big.n
        out.append(
            f"{'PASS' if ok else 'MISS'}  {name}: {big.errors} errors, "
            f"{big.persisted}/{big.n} persisted"
        )
    copilot, relay = _copilot_at(runs, RATIO_AT), _relay_at(runs, RATIO_AT)
    checks: tuple[tuple[str, Callable[[Run], float | None], str, int], ...] = (
        ("TTFT p50", lambda r: r.ttft_p50_ms, "ms", 1),
        ("CPU per 1k tokens (server process)", lambda r: r.per_1k(r.cpu_server_s), "s", 3),
    )
    for what, get, unit, digits in checks:
        name = f"copilot N={RATIO_AT}: {what} within {TARGET_RATIO}x of the minimal relay"
        if copilot is None or relay is None:
            out.append(f"n/a   {name} (not measured)")
            continue
        ratio = _ratio(get(copilot), get(relay))
        ok = ratio is not None and ratio <= TARGET_RATIO
        out.append(
            f"{'PASS' if ok else 'MISS'}  {name}: {_num(get(copilot), digits)} {unit} vs "
            f"{_num(get(relay), digits)} {unit} = "
            f"{'-' if ratio is None else f'{ratio:.2f}'}x"
        )
    out.extend(tracing_lines(runs))
    if copilot is not None and relay is not None:
        p99 = _ratio(copilot.ttft_p99_ms, relay.ttft_p99_ms)
        out.append(
            f"info  copilot N={RATIO_AT}: TTFT p99 {_num(copilot.ttft_p99_ms, 1)} ms vs "
            f"{_num(relay.ttft_p99_ms, 1)} ms = {'-' if p99 is None else f'{p99:.2f}'}x"
        )
    return out


def problem_lines(runs: list[Run]) -> list[str]:
    """Error and persistence samples, one line each."""
    out = []
    for run in runs:
        for sample in run.error_samples:
            out.append(f"{run.label} N={run.n} error: {sample}")
        for sample in run.persist_problems:
            out.append(f"{run.label} N={run.n} not persisted: {sample}")
    return out


TRACING_TARGET = 1.05  # tracing on may cost at most 5% more CPU per turn and TTFT


def tracing_lines(runs: list[Run]) -> list[str]:
    """Per N measured both ways: copilot with tracing on against copilot without."""
    out = []
    for traced in runs:
        if traced.mode != "copilot-traced" or traced.profiled:
            continue
        plain = _copilot_at(runs, traced.n)
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
