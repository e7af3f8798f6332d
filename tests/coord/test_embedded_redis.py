"""The embedded Redis launcher, against real redis-server processes in tmp data dirs."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import redis

from app.coord.embedded_redis import EmbeddedRedis
from app.devtools.processes import DataDirInUseError, ServiceStartError, wait_for

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import json, sys
from pathlib import Path
from app.coord.embedded_redis import EmbeddedRedis
service = EmbeddedRedis(Path(sys.argv[1]))
service.start()
print(json.dumps({"pid": service.pid}), flush=True)
sys.stdin.read()
"""


@contextmanager
def holder_process(data_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A python process that starts the service on `data_dir`; yields it and the service pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=60), "the holder did not start the service in time"
        yield proc, json.loads(proc.stdout.readline())["pid"]
    finally:
        proc.kill()
        proc.wait(10)


def gone(proc: psutil.Process) -> bool:
    """Whether the process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A started server on a fresh data dir, stopped afterwards."""
    with EmbeddedRedis(tmp_path) as started:
        yield started


def test_start_returns_a_url_to_a_server_bound_to_loopback_only(server: EmbeddedRedis) -> None:
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        assert client.ping()
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir") == {"dir": str(server.root)}


def test_restart_keeps_data_and_port(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first, redis.Redis.from_url(first.url) as client:
        client.set("greeting", "kept")
        url = first.url
    with EmbeddedRedis(tmp_path) as again, redis.Redis.from_url(again.url) as client:
        assert again.url == url
        assert client.get("greeting") == b"kept"


def test_second_instance_on_same_data_dir_fails_with_clear_message(tmp_path: Path) -> None:
    with holder_process(tmp_path) as (holder, _):
        with pytest.raises(DataDirInUseError) as caught:
            EmbeddedRedis(tmp_path).start()
        message = str(caught.value)
        assert (
            f"data dir {tmp_path} is in use by another copilot serve (pid {holder.pid}" in message
        )
        assert "COPILOT_DATA_DIR" in message


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    started = EmbeddedRedis(tmp_path)
    started.start()
    assert started.pid is not None
    process = psutil.Process(started.pid)
    assert os.getpgid(started.pid) == started.pid  # its own group: a terminal Ctrl-C skips it
    started.stop()
    assert gone(process)
    assert started.pid is None


def test_server_dies_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    with holder_process(tmp_path) as (holder, pid):
        process = psutil.Process(pid)
        holder.send_signal(signal.SIGKILL)
        assert wait_for(lambda: gone(process), timeout=30), "redis-server outlived its parent"
    with EmbeddedRedis(tmp_path) as again, redis.Redis.from_url(again.url) as client:
        assert client.ping()


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        aof = first.root / "appendonly.aof"
    aof.write_bytes(b"*this is not an append only file\r\n")
    broken = EmbeddedRedis(tmp_path, start_timeout=20)
    with pytest.raises(ServiceStartError, match="append only file") as caught:
        broken.start()
    assert str(broken.log_path) in str(caught.value)
    assert broken.pid is None
