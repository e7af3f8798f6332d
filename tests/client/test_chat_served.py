"""`copilot chat` against a real `copilot serve` and the fake upstream, as a user runs it.

One server (with an API key, so the client's credentials are exercised) serves the module.
One-shot runs pipe stdout (plain output); the conversation runs on a pseudo-terminal.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle
from tests.serving import (
    COPILOT,
    Served,
    clean_environ,
    finished_turn,
    run_copilot,
    serve,
    turns,
    upstream_env,
    wait_until,
)

API_KEY = "termchat-key-0123456789abcdef"
AUTH = {"COPILOT_API_KEY": API_KEY}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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
        COPILOT_API_KEYS=f"alice={API_KEY}",
        COPILOT_HEARTBEAT_S="0.5",
    )
    with serve(env, tmp_path_factory.mktemp("termchat")) as server:
        server.headers = {"x-api-key": API_KEY}
        yield server


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client


def chat(served: Served, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_copilot(
        ["chat", "--url", served.base_url, *args], AUTH if env is None else env, tmp_path
    )


def stored_text(http: httpx.Client, session_id: str) -> str:
    messages = http.get(f"/api/v1/sessions/{session_id}/messages").json()["messages"]
    reply = messages[-1]
    assert reply["role"] == "assistant"
    return "\n\n".join(p["text"] for p in reply["parts"] if p["type"] == "text")


def test_one_shot_prints_exactly_the_reply(served: Served, tmp_path: Path) -> None:
    result = chat(served, tmp_path, "-m", "hello there")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Echo: hello there\n", "")


def test_one_shot_shows_a_tool_call_as_one_line_on_stderr(served: Served, tmp_path: Path) -> None:
    result = chat(served, tmp_path, "-m", "time? [[fake:tool name=get_current_time input={}]]")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('Tool result: {"timezone":"UTC"')
    assert result.stdout.count("\n") == 1
    assert re.fullmatch(
        r'tool get_current_time\(\{\}\) -> \{"timezone": "UTC", .*\}\n', result.stderr
    )


def test_a_failed_turn_exits_non_zero_with_the_error_on_stderr(
    served: Served, tmp_path: Path
) -> None:
    result = chat(served, tmp_path, "-m", "[[fake:error status=400]]")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "error (invalid_request): The model provider rejected the request." in result.stderr


def test_session_continues_a_session(served: Served, http: httpx.Client, tmp_path: Path) -> None:
    session = f"tc-{uuid.uuid4().hex[:10]}"
    assert chat(served, tmp_path, "-m", "first", "--session", session).returncode == 0
    second = chat(
        served, tmp_path, "-m", "second", "--session", session, "--api-key", API_KEY, env={}
    )
    assert (second.returncode, second.stdout) == (0, "Echo: second\n")
    messages = http.get(f"/api/v1/sessions/{session}/messages").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_the_server_refusing_the_credentials_exits_non_zero(served: Served, tmp_path: Path) -> None:
    result = chat(served, tmp_path, "-m", "hi", env={})
    assert result.returncode == 1
    assert "missing credentials" in result.stderr
    wrong = chat(served, tmp_path, "-m", "hi", env={"COPILOT_API_KEY": "wrong-key-0123456789"})
    assert wrong.returncode == 1
    assert "invalid_api_key" in wrong.stderr


def test_a_server_that_is_not_there_is_said_so_whatever_the_server_settings(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # The server's settings, even broken ones, are none of the client's business.
    broken = {"COPILOT_API_KEYS": "alice=tiny"}
    result = run_copilot(["chat", "--url", url, "-m", "hi"], broken, tmp_path)
    assert result.returncode == 1
    assert f"cannot reach {url}/api/v1" in result.stderr
    assert "chat" in run_copilot(["--help"], {}, tmp_path).stdout


class CuttingProxy:
    """A TCP proxy to the server that cuts its first connection after `cut_after` bytes of
    answer, as a dropped connection would; later connections pass untouched."""

    def __init__(self, target: str, cut_after: int) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.cut_after = cut_after
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self.connections += 1
                limit = self.cut_after if self.connections == 1 else None
                upstream = socket.create_connection(self.target)
                threading.Thread(
                    target=self._pump, args=(client, upstream, None), daemon=True
                ).start()
                threading.Thread(
                    target=self._pump, args=(upstream, client, limit), daemon=True
                ).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := source.recv(256):
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: limit - sent])
                    break
                sink.sendall(data)
                sent += len(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_dropped_connection_is_resumed_and_the_reply_printed_once(
    served: Served, http: httpx.Client, tmp_path: Path
) -> None:
    proxy = CuttingProxy(served.base_url, cut_after=1500)
    session = f"tc-{uuid.uuid4().hex[:10]}"
    try:
        result = run_copilot(
            [
                "chat",
                "--url",
                proxy.url,
                "--session",
                session,
                "-m",
                "[[fake:text tokens=80 rate=80]]",
            ],
            AUTH,
            tmp_path,
        )
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert proxy.connections >= 2, "the stream was not cut"
    assert "[connection lost: resuming]" in result.stderr
    assert result.stdout == stored_text(http, session) + "\n"
    assert len(result.stdout.split()) == 80


class Terminal:
    """`copilot chat` on a pseudo-terminal: type into it, wait for what it prints."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            os.chdir(cwd)
            os.execve(COPILOT, [COPILOT, "chat", *args], {**clean_environ(), "TERM": "dumb", **env})
        self.pid, self.fd = pid, fd
        self.seen = ""  # everything printed, ANSI sequences removed
        self.pos = 0  # where the next `expect` starts looking
        self.status: int | None = None

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the child has exited
            return False
        self.seen += ANSI.sub("", data.decode(errors="replace")).replace("\r", "")
        return bool(data)

    def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Wait for `pattern` after the previous match; the match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.seen, self.pos)
            if match:
                self.pos = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 0.2)):
                raise AssertionError(f"{pattern!r} not printed; got:\n{self.seen[self.pos :]}")

    def wait(self, timeout: float = 20) -> int | None:
        """The exit status, once the child exits."""
        wait_until(self.exited, timeout)
        return self.status

    def exited(self) -> bool:
        """Whether the child has exited (its exit status is then `status`)."""
        self._read(0.05)
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            os.close(self.fd)
            self.status = os.waitstatus_to_exitcode(status)
        return bool(pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


@pytest.fixture
def terminal(served: Served, tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(["--url", served.base_url], AUTH, tmp_path)
    yield term
    term.kill()


PROMPT = r"you> $"


def test_a_conversation_on_a_terminal(
    terminal: Terminal, http: httpx.Client, served: Served
) -> None:
    first = terminal.expect(r"session (\w+)\]").group(1)
    terminal.expect(PROMPT)
    terminal.send("hello\r")
    terminal.expect(r"\nEcho: hello\n")
    terminal.expect(r"\[claude-[\w.-]+ · \d+ in, \d+ out tokens · \$\d+\.\d{4}\]\n")
    terminal.expect(PROMPT)

    terminal.send("/retry\r")
    terminal.expect(r"\nEcho: hello\n")
    terminal.expect(PROMPT)
    assert [t["trigger"] for t in turns(http, first)] == ["submit-message", "regenerate-message"]

    terminal.send("/new\r")
    second = terminal.expect(r"\[new session (\w+)\]").group(1)
    assert second != first
    terminal.send("question two\r")
    terminal.expect(r"\nEcho: question two\n")
    terminal.expect(PROMPT)

    terminal.send("/sessions\r")
    terminal.expect(rf"\* {second}  idle .*\n  {first}  idle ")
    terminal.expect(PROMPT)

    terminal.send(f"/resume {first}\r")
    terminal.expect(rf"\[session {first}: ")
    terminal.expect(r"you> hello\nEcho: hello\n")
    terminal.expect(PROMPT)
    terminal.send("and again\r")
    terminal.expect(r"\nEcho: and again\n")
    terminal.expect(PROMPT)
    roles = [m["role"] for m in http.get(f"/api/v1/sessions/{first}/messages").json()["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]

    terminal.send("/exit\r")
    assert terminal.wait() == 0


def test_ctrl_c_stops_the_turn_and_a_second_one_quits(
    terminal: Terminal, http: httpx.Client
) -> None:
    session = terminal.expect(r"session (\w+)\]").group(1)
    terminal.expect(PROMPT)
    terminal.send("[[fake:text tokens=400 rate=20]]\r")
    terminal.expect(r"\nThe lazy order")  # the fake's words: the reply is streaming
    terminal.send("\x03")
    terminal.expect(r"\[stopping: Ctrl-C again to quit\]")
    terminal.expect(r"\[stopped\]\n")
    terminal.expect(PROMPT)
    assert finished_turn(http, session)["status"] == "stopped"

    terminal.send("[[fake:text tokens=400 rate=20]]\r")
    terminal.expect(r"\nThe lazy order")
    terminal.send("\x03")
    terminal.expect(r"\[stopping")
    terminal.send("\x03")
    assert terminal.wait() == 130
    wait_until(lambda: all(t["status"] != "running" for t in turns(http, session)))


def test_session_at_the_prompt_shows_the_history_or_starts_the_session(
    served: Served, tmp_path: Path
) -> None:
    session = f"tc-{uuid.uuid4().hex[:10]}"
    new = Terminal(["--url", served.base_url, "--session", session], AUTH, tmp_path)
    try:
        new.expect(rf"\[new session {session}\]")
        new.expect(PROMPT)
        new.send("remember me\r")
        new.expect(r"\nEcho: remember me\n")
        new.expect(PROMPT)
        new.send("/exit\r")
        assert new.wait() == 0
    finally:
        new.kill()
    again = Terminal(["--url", served.base_url, "--session", session], AUTH, tmp_path)
    try:
        again.expect(r"you> remember me\nEcho: remember me\n")
        again.expect(PROMPT)
    finally:
        again.kill()


def test_ctrl_c_at_the_prompt_quits(terminal: Terminal) -> None:
    terminal.expect(PROMPT)

    def interrupted() -> bool:
        # A SIGINT that lands between the prompt's display and input()'s wait for a key is
        # only acted on at the next key (CPython's readline); a person never types that fast.
        terminal.send("\x03")
        return terminal.exited()

    wait_until(interrupted, timeout=20, interval=0.5)
    assert terminal.status == 0
