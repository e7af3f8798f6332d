"""The lifecycle the embedded PostgreSQL and Redis share: claim the dir, start, wait, stop.

A launcher subclasses `EmbeddedService`, names itself (`service`, `program`, `readiness`,
`logger`) and fills in only the steps that differ: `_prepare()`, `_spawn()`, `_ready()`,
`_after_ready()`, `_stop_signals()`, `_describe()` and `url`. The rest is here once: the files
live in `data_dir/<service>` (`<service>.log`, `port`, `copilot.lock`), the data dir is locked
for as long as the server runs, the port is remembered between starts, readiness is polled
against `start_timeout` with the log tail in the error, and a start that fails at any step
stops what it started and releases the lock.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from app.devtools.processes import (
    DataDirLock,
    EmbeddedServiceError,
    ServiceStartError,
    choose_port,
    log_tail,
    remember_port,
    stop_child,
    wait_for,
)


class EmbeddedService(ABC):
    """A server run as our child on 127.0.0.1, with its files in `data_dir/<service>`."""

    service: ClassVar[str]
    """Its short name, in paths (`data_dir/<service>`, `<service>.log`) and messages."""
    program: ClassVar[str]
    """The server binary's name, as the start errors call it."""
    readiness: ClassVar[str]
    """What the server does once ready: "`program` did not `readiness` on 127.0.0.1:port"."""
    logger: ClassVar[logging.Logger]
    """Where the ready line goes (the launcher module's logger)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.data_dir = data_dir
        self.requested_port = port
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.root = (data_dir / self.service).absolute()
        self.log_path = self.root / f"{self.service}.log"
        self._port_file = self.root / "port"
        self._lock = DataDirLock(
            self.root / "copilot.lock", data_dir=data_dir, service=self.service
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 while running."""
        if self._port is None:
            raise EmbeddedServiceError(f"the embedded {self.service} is not running")
        return self._port

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL clients connect with while running."""

    def start(self) -> str:
        """Claim the data dir, start the server, wait until it is ready, and return its URL."""
        if self._proc is not None:
            raise EmbeddedServiceError(f"the embedded {self.service} is already running")
        began = time.monotonic()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._prepare()
            self._port = choose_port(self.requested_port, self._port_file, service=self.service)
            self._proc = self._spawn()
            self._wait_ready(self._proc)
            self._after_ready()
            remember_port(self._port, self._port_file)
        except BaseException:
            self.stop()
            raise
        self.logger.info(
            "embedded %s ready on 127.0.0.1:%d in %.2f s (%s)",
            self.service,
            self._port,
            time.monotonic() - began,
            self._describe(),
        )
        return self.url

    def stop(self) -> None:
        """Stop the server with its `_stop_signals()`, wait for it, and release the data dir."""
        proc, self._proc = self._proc, None
        self._port = None
        try:
            if proc is not None:
                stop_child(proc, self._stop_signals())
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        def ready() -> bool:
            if proc.poll() is not None:
                raise ServiceStartError(
                    f"{self.program} exited with code {proc.returncode} while starting; "
                    f"{log_tail(self.log_path)}"
                )
            return self._ready()

        if not wait_for(ready, timeout=self.start_timeout):
            raise ServiceStartError(
                f"{self.program} did not {self.readiness} on 127.0.0.1:{self.port} within "
                f"{self.start_timeout:.0f} s; {log_tail(self.log_path)}"
            )

    # Optional steps: most services have nothing to do here.
    def _prepare(self) -> None:  # noqa: B027
        """Make the server's files ready; runs under the lock, before the port is chosen."""

    def _after_ready(self) -> None:  # noqa: B027
        """Finish setting up a server that answers; an error here stops it."""

    @abstractmethod
    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the server on `self.port`, its output appended to `self.log_path`."""

    @abstractmethod
    def _ready(self) -> bool:
        """Whether the server answers on `self.port` and is our child, not another server."""

    @abstractmethod
    def _stop_signals(self) -> list[tuple[signal.Signals, float]]:
        """The signals that stop the server, each with how long to wait for it after."""

    @abstractmethod
    def _describe(self) -> str:
        """Where the data is (and more, if useful), for the ready line of the log."""
