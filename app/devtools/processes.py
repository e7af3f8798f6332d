"""Child-process plumbing shared by the embedded PostgreSQL and Redis launchers.

Deliberate choices:

- A service's directory is claimed with an exclusive, non-blocking `fcntl.flock` on a lock file
  that names the holder's pid. The kernel drops the lock when its holder dies, however it dies,
  so a lock left by a SIGKILLed run never blocks; the file itself is never deleted (deleting lock
  files races). flock locks belong to an open file description, so two launchers in one process
  exclude each other too.
- Children run in their own process group, so a Ctrl-C in the terminal reaches only the server,
  which then stops them in order.
- On Linux children get `PR_SET_PDEATHSIG`: the kernel signals them when the thread that started
  them exits, including when the whole server is SIGKILLed. Start services from the main thread
  (or one that lives as long as the server). Elsewhere only `stop()` stops them.
- Every wait has a deadline; waiting is polling a real condition, never a bare sleep.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started or stopped; the message says what to do."""


class DataDirInUseError(EmbeddedServiceError):
    """Another live process holds the data dir of this service."""


class ServiceStartError(EmbeddedServiceError):
    """The service did not become ready; the message carries the tail of its log."""


class DataDirLock:
    """An exclusive `flock` on `lock_file`, held from `acquire()` to `release()`."""

    def __init__(self, lock_file: Path, *, data_dir: Path, service: str) -> None:
        self.lock_file = lock_file
        self.data_dir = data_dir
        self.service = service
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise `DataDirInUseError` naming the holder."""
        if self._fd is not None:
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise DataDirInUseError(self._in_use_message(holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)

    def _in_use_message(self, holder: int | None) -> str:
        where = f"data dir {self.data_dir}"
        if holder == os.getpid():
            return (
                f"{where} is already in use by this process (another embedded {self.service} "
                "on it); stop that one first"
            )
        who = f"pid {holder}" if holder else "pid unknown"
        return (
            f"{where} is in use by another copilot serve ({who}, running its embedded "
            f"{self.service}); stop it or set COPILOT_DATA_DIR"
        )


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `host:port` now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def choose_port(requested: int | None, remembered_in: Path, *, service: str) -> int:
    """The requested port, else the one remembered in `remembered_in` if free, else a new one."""
    if requested is not None:
        if not port_is_free(requested):
            raise EmbeddedServiceError(
                f"port {requested} on 127.0.0.1 is already in use; "
                f"choose another port for the embedded {service}"
            )
        return requested
    try:
        remembered = int(remembered_in.read_text().strip())
    except (OSError, ValueError):
        remembered = None
    if remembered is not None and port_is_free(remembered):
        return remembered
    return free_port()


def remember_port(port: int, remembered_in: Path) -> None:
    """Record `port` so that the next start without an explicit port reuses it."""
    remembered_in.write_text(f"{port}\n")


def wait_for(condition: Callable[[], bool], *, timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"last lines of {path}:\n{tail}"


def user_namespace_argv(inside: tuple[int, int]) -> list[str] | None:
    """A command prefix that runs a program in a new user namespace mapping our uid/gid to
    `inside` (util-linux `unshare`), or None when there is no `unshare` here.

    The namespace is made by a program of its own, not in our pre-exec step: a process that
    ever started an OpenTelemetry batch processor (the Langfuse client) has a fork hook that
    starts a thread in every child, and the kernel refuses a new user namespace to a
    multithreaded process."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    return [unshare, f"--map-user={inside[0]}", f"--map-group={inside[1]}", "--"]


@functools.cache
def _prctl() -> Callable[..., int]:
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def spawn(
    argv: Sequence[str],
    *,
    stdout: IO[bytes] | int,
    env: dict[str, str],
    death_signal: signal.Signals,
    before_exec: Callable[[], None] | None = None,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that gets `death_signal` when we die."""
    parent = os.getpid()
    prctl = _prctl() if sys.platform.startswith("linux") else None

    def preexec() -> None:
        # Runs in the child after fork, after the uid switch (which would clear the setting).
        if before_exec is not None:
            before_exec()
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(death_signal))
            if os.getppid() != parent:  # we died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        env=env,
        process_group=0,
        preexec_fn=preexec,
        user=user,
        group=group,
        extra_groups=[] if group is not None else None,
    )


def stop_child(
    proc: subprocess.Popen[bytes],
    steps: Sequence[tuple[signal.Signals, float]],
    *,
    grace: float = 0.0,
) -> None:
    """Give the child `grace` s to exit, then send each signal in turn; SIGKILL at last."""
    if grace > 0:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    for sig, timeout in steps:
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
