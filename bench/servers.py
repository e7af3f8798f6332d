"""The processes of one bench/relay.py row: fake upstream, server, and their warm-up.

The fake upstream and `copilot serve` run from `--app-dir` (default: this checkout) with this
checkout's virtualenv; the minimal relay and the load generator always run from `bench/`.
Two harnesses: `quiet` (`copilot fake-upstream`: uvloop, httptools, raw ASGI) and `busy`
(`bench/busy_upstream.py`: the same app in Starlette on uvicorn's asyncio loop and h11).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from measure import Spawned, free_port
from storage import database_url

BENCH = Path(__file__).resolve().parent
COPILOT = str(Path(sys.executable).parent / "copilot")
MODES = {"upstream": "anthropic", "relay": "ui", "copilot": "ui", "copilot-traced": "ui"}
# What `copilot-traced` sets: tracing on, exporting to a stand-in Langfuse of its own.
TRACING_KEYS = {"LANGFUSE_PUBLIC_KEY": "pk-lf-bench", "LANGFUSE_SECRET_KEY": "sk-lf-bench"}


@dataclass
class Bench:
    """What every run shares."""

    args: argparse.Namespace
    run_id: str
    out: Path
    env: dict[str, str]
    database: str | None = None
    py_spy: list[str] | None = None

    @property
    def app_env(self) -> dict[str, str]:
        """Environment of the processes that run `app` (from `--app-dir` when given)."""
        if self.args.app_dir == BENCH.parent:
            return self.env
        return {**self.env, "PYTHONPATH": str(self.args.app_dir)}

    @property
    def database_url(self) -> str:
        """URL of the bench database."""
        assert self.database is not None
        return database_url(self.args.database_url, self.database)


def clean_env() -> dict[str, str]:
    """This environment without the variables copilot reads, so none leaks into a run."""
    drop = ("COPILOT_", "ANTHROPIC_", "LANGFUSE_")
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(drop) and k not in ("DATABASE_URL", "REDIS_URL")
    }


def copilot_env(bench: Bench, fake_url: str) -> dict[str, str]:
    """Environment of `copilot serve` for a run."""
    env = dict(bench.app_env)
    env.update(
        {
            "DATABASE_URL": bench.database_url,
            "REDIS_URL": bench.args.redis_url,
            "ANTHROPIC_BASE_URL": fake_url,
            "ANTHROPIC_API_KEY": "bench",
            # Titles as users get them (on) unless `--titles off`: the minimal relay makes
            # none, and copilot serve has to hide their cost.
            # (bench/fleet.py has no `--titles`: its figures are about the fleet, titles off.)
            "COPILOT_TITLE_GENERATION": "1"
            if getattr(bench.args, "titles", "off") == "on"
            else "0",
            # The relay is a Messages API relay: compare like with like (bench/sdk.py
            # measures the Claude SDK backend against the bare SDK).
            "COPILOT_BACKEND": "anthropic",
            "COPILOT_REDIS_KEY_PREFIX": f"copilot-bench-{bench.run_id}",
            "COPILOT_DATA_DIR": str(bench.out / "data"),
        }
    )
    for item in bench.args.copilot_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def warm_up(kind: str, url: str, prefix: str) -> None:
    """Two short chats, so that the measurement does not pay first-request costs."""
    directive = "[[fake:text tokens=5 rate=0]]"
    with httpx.Client(timeout=60) as client:
        for k in range(2):
            if kind == "anthropic":
                response = client.post(
                    url + "/v1/messages",
                    headers={"x-api-key": "bench"},
                    json={
                        "model": "claude-sonnet-4-6",
                        "max_tokens": 64,
                        "stream": True,
                        "messages": [{"role": "user", "content": directive}],
                    },
                )
            else:
                response = client.post(
                    url + "/api/v1/chat", json={"id": f"{prefix}w-{k}", "message": directive}
                )
            if response.status_code != 200 or b"text" not in response.content:
                raise RuntimeError(f"warm-up failed: {response.status_code} {response.text[:300]}")


def start_servers(
    bench: Bench, mode: str, logs: Path, procs: list[Spawned], harness: str = "quiet"
) -> tuple[Spawned, Spawned, str]:
    """Start the fake upstream of `harness` and (relay, copilot) the server side by side;
    wait for both; return fake, server and the URL the load generator targets."""
    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    argv = [COPILOT, "fake-upstream", "--host", "127.0.0.1", "--port", str(fake_port)]
    if harness == "busy":
        argv = [sys.executable, str(BENCH / "busy_upstream.py"), "--port", str(fake_port)]
    fake = Spawned.start("fake-upstream", argv, bench.app_env, logs, cwd=bench.args.app_dir)
    procs.append(fake)
    server, url, ready = fake, fake_url, "/healthz"
    if mode != "upstream":
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if mode == "relay":
            argv = [sys.executable, str(BENCH / "minimal_relay.py"), "--port", str(port)]
            server = Spawned.start("relay", argv + ["--upstream", fake_url], bench.env, logs)
        else:
            argv = [COPILOT, "serve", "--host", "127.0.0.1", "--port", str(port)]
            env = copilot_env(bench, fake_url)
            if mode == "copilot-traced":
                env.update(TRACING_KEYS, LANGFUSE_BASE_URL=start_sink(bench, logs, procs))
            server = Spawned.start("copilot", argv, env, logs, cwd=bench.args.app_dir)
            ready = "/readyz"
        procs.append(server)
    fake.wait_ready(fake_url + "/healthz")
    server.wait_ready(url + ready)
    return fake, server, url


def start_sink(bench: Bench, logs: Path, procs: list[Spawned]) -> str:
    """A stand-in Langfuse (`app.devtools.langfuse_sink`, counting what it receives) in a
    process of its own; its URL once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "app.devtools.langfuse_sink", "--port", str(port)]
    sink = Spawned.start("langfuse-sink", argv, bench.app_env, logs, cwd=bench.args.app_dir)
    procs.append(sink)
    url = f"http://127.0.0.1:{port}"
    sink.wait_ready(url + "/healthz")
    return url
