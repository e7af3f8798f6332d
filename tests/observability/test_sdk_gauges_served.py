"""The Claude SDK backend's gauges on a real `copilot serve`: its CLI processes and warm
clients, as the pool holds them and as the OS sees them."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import Served, assert_well_formed, serve, stream, upstream_env, wait_until


def _gauges(http: httpx.Client) -> tuple[float, float]:
    """(`copilot_sdk_cli_processes`, `copilot_sdk_warm_clients`)."""
    values = {}
    for line in http.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("copilot_sdk_cli_processes", "copilot_sdk_warm_clients"):
            values[name] = float(value)
    return values["copilot_sdk_cli_processes"], values["copilot_sdk_warm_clients"]


def _cli_processes(served: Served) -> int:
    """The Claude Code CLI processes this server started, as the OS lists them."""
    count = 0
    for child in psutil.Process(served.proc.pid).children(recursive=True):
        try:
            count += "claude" in " ".join(child.cmdline()).lower()
        except psutil.NoSuchProcess:
            continue
    return count


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    root = Path(tempfile.mkdtemp(prefix="ws", dir="/tmp"))  # the CLI's socket path is short
    env = upstream_env(fake.base_url, database_url, redis_url, COPILOT_BACKEND="claude_sdk")
    try:
        with serve({**env, "COPILOT_WORKSPACES_DIR": str(root)}, tmp_path_factory.mktemp("g")) as s:
            yield s
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_gauges_follow_the_warm_cli_processes(served: Served) -> None:
    with served.client() as http:
        assert _gauges(http) == (0, 0)
        sessions = [f"gauge-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        for count, session_id in enumerate(sessions, 1):
            result = stream(http, "POST", "/api/v1/chat", json={"id": session_id, "message": "hi"})
            assert_well_formed(result)
            assert wait_until(lambda c=count: _gauges(http) == (c, c), timeout=30)
        assert _cli_processes(served) == 2
        assert http.delete(f"/api/v1/sessions/{sessions[0]}").status_code == 204
        assert wait_until(lambda: _gauges(http) == (1, 1), timeout=30)
        assert wait_until(lambda: _cli_processes(served) == 1, timeout=30)
