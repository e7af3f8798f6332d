"""py-spy for bench/relay.py: record a server while it is measured, and summarize the profile.

    uv run python bench/profiling.py profile.txt [--top 15]     # hotspots of a raw profile

`recording()` attaches one `py-spy record --nonblocking --format raw` (100 Hz) writing collapsed
stacks to `profile.txt` (speedscope and flamegraph.pl render them as a flame graph); a single
sampler, because on two cores py-spy's own CPU competes with the server it measures.
`analyse()` turns the collapsed stacks into markdown tables.

Three views, each as a share of the samples in which the process was not idle: self time by
source line, self time by component (a site-package, a module of `app/`, or the standard
library), inclusive time by component (the frames inside the event loop: the share of
samples in which the component was on the stack), and inclusive time of the functions of
`app/` (each counted once per stack).
Self time on `asyncio/runners.py Runner.run` is the event loop's own C code (uvloop: socket
reads and writes, callbacks), which py-spy charges to the frame that started the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from measure import Spawned

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_LOOP_FILES = ("asyncio/runners.py", "asyncio/base_events.py")
_ROOT = str(Path(__file__).resolve().parents[1]) + "/"


def _short(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if path.startswith(_ROOT):
        return path[len(_ROOT) :]
    if "/lib/python3" in path:
        return "stdlib/" + path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return path


def _component(short: str) -> str:
    if short.startswith("app/"):
        return short
    if short.startswith("stdlib/"):
        parts = short.split("/")
        return "stdlib/" + (parts[1] if len(parts) > 2 else parts[-1].removesuffix(".py"))
    return short.split("/", 1)[0].removesuffix(".py")


def _frames(stack: str) -> list[tuple[str, str, str]]:
    out = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match is None or match["line"] is None:
            continue  # process and thread markers
        out.append((match["func"], _short(match["file"]), match["line"]))
    return out


def analyse(text: str, top: int = 15) -> str:
    """Render the three views of a collapsed-stack profile."""
    by_line: Counter[str] = Counter()
    by_func: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    within: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        func, short, lineno = frames[-1]
        by_line[f"{short}:{lineno} {func}"] += count
        by_component[_component(short)] += count
        loop_at = max((i for i, f in enumerate(frames) if f[1].endswith(_LOOP_FILES)), default=-1)
        for name in {_component(s) for _, s, _ in frames[loop_at + 1 :]}:
            within[name] += count
        for name in {
            f"{short} {f}"
            for f, short, _ in frames
            if short.startswith("app/") and short != "app/cli.py"
        }:
            by_func[name] += count
    if not total:
        return "no samples"

    def table(title: str, counter: Counter[str]) -> list[str]:
        rows = [f"{title}", "| % | samples | where |", "| ---: | ---: | --- |"]
        rows += [f"| {100 * n / total:.1f} | {n} | `{k}` |" for k, n in counter.most_common(top)]
        return rows

    out = [f"{total} samples (non-idle)", ""]
    out += table("Self time by line", by_line) + [""]
    out += table("Self time by component", by_component) + [""]
    out += table("Inclusive time by component (inside the event loop)", within) + [""]
    out += table("Inclusive time of app/ functions", by_func)
    return "\n".join(out)


def resolve_py_spy() -> list[str]:
    """The py-spy command: on PATH, else through `uvx` (fetched from PyPI on first use)."""
    found = shutil.which("py-spy")
    command = [found] if found else ["uvx", "py-spy"]
    subprocess.run([*command, "--version"], check=True, timeout=300, capture_output=True)
    return command


@contextlib.contextmanager
def recording(py_spy: list[str], pid: int, logs: Path, env: dict[str, str]) -> Iterator[None]:
    """Record `pid` into `logs/profile.txt` (collapsed stacks) while the block runs."""
    argv = [*py_spy, "record", "--pid", str(pid), "--nonblocking", "--rate", "100"]
    argv += ["--format", "raw", "-o", str(logs / "profile.txt")]
    spies = [Spawned.start("py-spy", argv, env, logs)]
    deadline = time.monotonic() + 60
    while not all("Sampling" in s.tail() for s in spies):
        if time.monotonic() > deadline or any(s.popen.poll() is not None for s in spies):
            for spy in spies:
                spy.stop()
            raise RuntimeError("py-spy did not start:\n" + "\n".join(s.tail() for s in spies))
        time.sleep(0.1)
    try:
        yield
    finally:
        for spy in spies:
            if spy.popen.poll() is None:
                spy.popen.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.popen.wait(60)
            except subprocess.TimeoutExpired:
                spy.stop()


def main() -> None:
    """Print the hotspots of a raw py-spy profile."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(analyse(args.profile.read_text(errors="replace"), args.top))


if __name__ == "__main__":
    main()
