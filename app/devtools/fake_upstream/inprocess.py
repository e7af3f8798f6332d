"""Running the fake upstream: standalone (`serve`), in a thread, or as a task in this loop.

The embedded variants bind their socket before uvicorn starts (so the port is known and
connections queue at once), leave signal handlers and logging configuration to the host
process, and stop without uvicorn's 100 ms polling: a stop closes every open connection, which
ends running streams through their disconnect watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from app.devtools.fake_upstream.script import ReplyPlan, plan_from_mapping
from app.devtools.fake_upstream.server import FakeUpstreamApp
from app.devtools.fake_upstream.state import FakeUpstreamConfig

_SHUTDOWN_SECONDS = 2.0


def serve(host: str, port: int, config: FakeUpstreamConfig | None = None) -> None:
    """Run the fake upstream with uvicorn until interrupted (`copilot fake-upstream`)."""
    app = FakeUpstreamApp(config)
    uvicorn.run(app, host=host, port=port, access_log=False, lifespan="off", backlog=4096)


@dataclass(frozen=True, slots=True)
class FakeUpstreamHandle:
    """A running fake upstream: where it listens and direct access to its state."""

    base_url: str
    host: str
    port: int
    app: FakeUpstreamApp

    def enqueue(self, *plans: ReplyPlan | dict[str, Any]) -> int:
        """Queue reply plans (same keys as `POST /_fake/script`); return the queue length."""
        built = [p if isinstance(p, ReplyPlan) else plan_from_mapping(p) for p in plans]
        return self.app.state.enqueue(built)

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Return the request log (as `GET /_fake/requests`), optionally for one path."""
        return self.app.state.requests(path)

    def reset(self) -> None:
        """Clear the queue, request log, error counters and prompt cache."""
        self.app.state.reset()


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone, reports startup, and stops at once."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave the host process's signal handlers in place."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening, then report that the server is up."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await super().startup(sockets=sockets)
        self._on_started()

    async def main_loop(self) -> None:
        """Wait for a stop request, refreshing the date header once a second."""
        assert self._stop is not None
        counter = 0
        while not self._stop.is_set() and not await self.on_tick(counter):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)
            counter = (counter + 10) % 864_000

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the listeners and every connection, then wait briefly for handlers."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            transport: Any = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SHUTDOWN_SECONDS
        while self.server_state.tasks and loop.time() < deadline:
            await asyncio.wait(set(self.server_state.tasks), timeout=deadline - loop.time())
        for task in list(self.server_state.tasks):
            task.cancel()
        await self.lifespan.shutdown()

    def request_stop(self) -> None:
        """Ask the server to stop; safe from any thread."""
        self.should_exit = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    return sock


def _embedded(
    config: FakeUpstreamConfig | None, host: str, port: int, on_started: Callable[[], None]
) -> tuple[_EmbeddedServer, socket.socket, FakeUpstreamHandle]:
    app = FakeUpstreamApp(config)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    uv_config = uvicorn.Config(
        app, log_config=None, lifespan="off", backlog=4096, timeout_graceful_shutdown=1
    )
    server = _EmbeddedServer(uv_config, on_started)
    handle = FakeUpstreamHandle(f"http://{host}:{bound_port}", host, bound_port, app)
    return server, sock, handle


@contextlib.contextmanager
def running_fake_upstream(
    port: int = 0, config: FakeUpstreamConfig | None = None, host: str = "127.0.0.1"
) -> Iterator[FakeUpstreamHandle]:
    """Run a fake upstream in a background thread for the duration of the block."""
    started = threading.Event()
    server, sock, handle = _embedded(config, host, port, started.set)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="fake-upstream", daemon=True
    )
    thread.start()
    try:
        while not started.wait(0.05):
            if not thread.is_alive():
                raise RuntimeError("fake upstream failed to start")
        yield handle
    finally:
        server.request_stop()
        thread.join(_SHUTDOWN_SECONDS + 3)
        sock.close()


@contextlib.asynccontextmanager
async def fake_upstream_task(
    port: int = 0, config: FakeUpstreamConfig | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[FakeUpstreamHandle]:
    """Run a fake upstream as a task of the running event loop for the duration of the block."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[None] = loop.create_future()
    server, sock, handle = _embedded(config, host, port, lambda: started.set_result(None))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="fake-upstream")
    try:
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            task.result()
            raise RuntimeError("fake upstream failed to start")
        yield handle
    finally:
        server.request_stop()
        try:
            await asyncio.wait_for(task, _SHUTDOWN_SECONDS + 3)
        finally:
            sock.close()
