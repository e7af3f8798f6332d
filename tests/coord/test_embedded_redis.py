"""The embedded Redis launcher, against real redis-server processes in tmp data dirs."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from app.coord.embedded_redis import EmbeddedRedis
from app.devtools.processes import ServiceStartError, wait_for
from tests.devtools.embedded_processes import (
    all_gone,
    assert_second_start_names_the_holder,
    holder_process,
)


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
    assert_second_start_names_the_holder(EmbeddedRedis, tmp_path)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    started = EmbeddedRedis(tmp_path)
    started.start()
    assert started.pid is not None
    process = psutil.Process(started.pid)
    assert os.getpgid(started.pid) == started.pid  # its own group: a terminal Ctrl-C skips it
    started.stop()
    assert all_gone([process])
    assert started.pid is None


def test_server_dies_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    with holder_process(EmbeddedRedis, tmp_path) as (holder, pid):
        process = psutil.Process(pid)
        holder.send_signal(signal.SIGKILL)
        assert wait_for(lambda: all_gone([process]), timeout=30), "redis-server outlived its parent"
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
