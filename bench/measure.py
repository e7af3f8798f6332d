"""Processes of bench/relay.py and what is measured on them: CPU seconds and peak RSS.

Every process the benchmark starts is a `Spawned`: started with its output in a log file,
stopped with SIGTERM (then SIGKILL after a deadline) by its own pid, never by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Spawned:
    """A process started by the benchmark."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], env: dict[str, str], logs: Path, cwd: Path | None = None
    ) -> Spawned:
        """Start `argv` (in `cwd`, default the checkout) with its output in `logs/<name>.log`."""
        log_path = logs / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd or Path(__file__).resolve().parents[1],
            )
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        """The end of the process's log."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, url: str, timeout: float = 90.0) -> None:
        """Poll `url` until it answers 200; fail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready at {url} within {timeout:.0f}s:\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, then SIGKILL if needed."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, timeout=30, check=True
    ).stdout


def code_version(root: Path) -> str:
    """Which code runs from `root`: the commit, plus a digest of uncommitted changes to `app/`
    and `migrations/` (so that rows measured on different working trees can be told apart)."""
    try:
        if _git(root, "rev-parse", "--show-toplevel").decode().strip() != str(root):
            return f"dir {root.name}"
        head = _git(root, "rev-parse", "--short", "HEAD").decode().strip()
        paths = ("--", "app", "migrations")
        digest = hashlib.sha1(_git(root, "diff", "HEAD", *paths))
        for name in _git(root, "ls-files", "--others", "--exclude-standard", *paths).split():
            digest.update(name + (root / name.decode()).read_bytes())
        dirty = bool(_git(root, "status", "--porcelain", *paths).strip())
    except (OSError, subprocess.SubprocessError):
        return f"dir {root.name}"
    return f"{head}+{digest.hexdigest()[:6]}" if dirty else head


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    """User + system CPU of the processes and their children (live and reaped)."""
    total = 0.0
    for root in procs:
        for proc in _tree(root):
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
                if proc is root:
                    total += t.children_user + t.children_system
    return total


class CpuByPid:
    """CPU of a changing set of processes (e.g. Postgres backends), summed per pid.

    A process that appears during the interval counts from zero; one that ends during it
    is lost, so keep the interval shorter than the processes' lives (pooled connections).
    """

    def __init__(self, find: Callable[[], list[psutil.Process]]) -> None:
        self.find = find
        self.before: dict[int, float] = {}

    def _now(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for proc in self.find():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
        return out

    def begin(self) -> None:
        """Take the first reading."""
        self.before = self._now()

    def end(self) -> float:
        """CPU seconds spent since `begin`."""
        return sum(now - self.before.get(pid, 0.0) for pid, now in self._now().items())


def postgres_backends(database: str) -> list[psutil.Process]:
    """Postgres backend processes connected to `database` (their title names it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        title = " ".join(cmd)
        if title.startswith("postgres:") and f" {database} " in f"{title} ":
            found.append(proc)
    return found


def redis_server(port: int) -> list[psutil.Process]:
    """The redis-server process listening on `port` (found by its title)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if (proc.info["name"] or "").startswith("redis-server") and f":{port}" in title:
            found.append(proc)
    return found


class RssSampler:
    """Samples the resident set size of a process tree in a background thread."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        rss = 0
        for proc in _tree(self.proc):
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
        self.peak = max(self.peak, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
