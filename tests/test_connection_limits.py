"""`copilot serve`'s connection limits: slow or huge request heads, idle keep-alive, the cap.

One server for the module, with a 2 s head deadline, a 1 s keep-alive and room for 6
connections; the clients are raw sockets, since an HTTP library would not misbehave.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import (
    Served,
    assert_well_formed,
    serve,
    start_turn_raw,
    stream,
    upstream_env,
    wait_until,
)

HEADER_TIMEOUT_S = 2.0
KEEPALIVE_S = 1
MAX_CONNECTIONS = 6
SLACK_S = 2.5  # a loaded CI machine may run the server's timers late


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    env = upstream_env(
        fake.base_url,
        database_url,
        redis_url,
        COPILOT_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        COPILOT_KEEPALIVE_S=str(KEEPALIVE_S),
        COPILOT_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        COPILOT_HEARTBEAT_S="0.5",
    )
    with serve(env, tmp_path_factory.mktemp("limits")) as server:
        yield server


@contextlib.contextmanager
def connection(served: Served) -> Iterator[socket.socket]:
    host, port = served.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    try:
        yield sock
    finally:
        sock.close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` within `within` seconds (reading what it sends)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if not sock.recv(4096):
                    return True
            except ConnectionResetError:
                return True
    return False


def test_a_slowloris_head_is_cut_within_the_header_timeout(served: Served) -> None:
    with connection(served) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for byte in b"X-Slow: " + b"a" * 100:  # one byte every half second: 54 s in all
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(sock, 0.5):
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed
    assert HEADER_TIMEOUT_S - 0.2 <= elapsed <= HEADER_TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    with connection(served) as sock:
        assert closed_by_server(sock, HEADER_TIMEOUT_S + SLACK_S)


def test_a_slow_head_on_a_kept_alive_connection_is_cut(served: Served) -> None:
    with connection(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next head begins, and stalls
        started = time.monotonic()
        assert closed_by_server(sock, HEADER_TIMEOUT_S + SLACK_S)
        assert time.monotonic() - started >= HEADER_TIMEOUT_S - 0.2


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive(served: Served) -> None:
    with connection(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert closed_by_server(sock, KEEPALIVE_S + SLACK_S)
        assert time.monotonic() - started < HEADER_TIMEOUT_S


def test_an_oversized_request_head_gets_431(served: Served) -> None:
    with connection(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(100):
                sock.sendall(b"X-Filler: " + b"f" * 1000 + b"\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431")


def test_normal_requests_and_a_long_stream_outlive_the_header_timeout(served: Served) -> None:
    body = {"id": f"s-{uuid.uuid4().hex[:10]}", "message": "[[fake:text tokens=60 rate=20]]"}
    with served.client() as http:
        started = time.monotonic()
        result = stream(http, "POST", "/api/v1/chat", json=body)
        assert time.monotonic() - started > HEADER_TIMEOUT_S
        assert http.get("/healthz").status_code == 200  # the same kept-alive connection
    assert_well_formed(result)
    assert len(result.text.split()) == 60


def test_requests_above_the_connection_cap_get_503(served: Served) -> None:
    held = [
        start_turn_raw(served, f"s-{uuid.uuid4().hex[:10]}", "[[fake:text tokens=100 rate=20]]")
        for _ in range(MAX_CONNECTIONS - 1)
    ]
    try:
        assert httpx.get(served.base_url + "/healthz").status_code == 503
    finally:
        for sock in held:
            sock.close()

    def admitted() -> bool:
        return httpx.get(served.base_url + "/healthz").status_code == 200

    wait_until(admitted, timeout=10)
