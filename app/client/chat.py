"""`copilot chat`: one question with `-m`, or a conversation at a prompt.

The client reads none of the server's settings (it may run anywhere, against any server):
its options come from flags or from its own variables, COPILOT_URL, COPILOT_TOKEN and
COPILOT_API_KEY. Exit status: 0 when the turn finished, 1 when it failed or the server
refused, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, TextIO

import httpx

from app.client.api import ApiError, CopilotAPI
from app.client.render import TurnView, Write, dim, message_writes, usage_line
from app.client.turn import ConnectionLost, TurnFollower

DEFAULT_URL = "http://127.0.0.1:8000"
INTERRUPTED = 130

HELP = """commands:
  /new          start a new session
  /sessions     list your sessions (/sessions more: the next page)
  /resume ID    continue session ID (shows its history, follows a running turn)
  /retry        answer the last message again
  /exit         quit (Ctrl-D at the prompt; Ctrl-C stops a reply, twice quits)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `copilot chat`."""
    env = os.environ
    parser.add_argument("-m", "--message", help="ask this, print the reply and exit")
    parser.add_argument(
        "--url", default=env.get("COPILOT_URL") or DEFAULT_URL, help="server (COPILOT_URL)"
    )
    parser.add_argument(
        "--token", default=env.get("COPILOT_TOKEN") or None, help="bearer JWT (COPILOT_TOKEN)"
    )
    parser.add_argument(
        "--api-key", default=env.get("COPILOT_API_KEY") or None, help="API key (COPILOT_API_KEY)"
    )
    parser.add_argument("--session", help="continue this session (default: a new one)")
    parser.add_argument(
        "--on-conflict",
        choices=["reject", "enqueue", "interrupt", "steer"],
        help="when a turn already runs in the session (default: the server's policy)",
    )


def new_session_id() -> str:
    """A fresh session id: `POST /chat` creates the session on its first message."""
    return uuid.uuid4().hex


class Terminal:
    """Where writes go: stdout and stderr, flushed at once."""

    def __init__(self, out: TextIO, err: TextIO, color: bool) -> None:
        self.out, self.err, self.color = out, err, color

    def emit(self, writes: list[Write]) -> None:
        """Print writes in order."""
        for channel, text in writes:
            if channel == "err":
                self.out.flush()
            stream = self.out if channel == "out" else self.err
            stream.write(text)
            stream.flush()

    def note(self, text: str) -> None:
        """A line of the client's own: dim on stdout on a terminal, on stderr when plain."""
        if self.color:
            self.emit([("out", dim(text, True) + "\n")])
        else:
            self.emit([("err", text + "\n")])

    def error(self, text: str) -> None:
        """An error line on stderr."""
        self.emit([("err", text + "\n")])


@contextlib.contextmanager
def ctrl_c_stops(follower: TurnFollower) -> Iterator[None]:
    """While a turn runs: the first Ctrl-C stops it, the second raises KeyboardInterrupt."""

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        if follower.stop_requested:
            raise KeyboardInterrupt
        follower.request_stop()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ChatClient:
    """The conversation: the current session, the turns, the commands."""

    def __init__(self, api: CopilotAPI, terminal: Terminal, session_id: str | None) -> None:
        self.api, self.terminal = api, terminal
        self.session_id = session_id or new_session_id()
        self.on_conflict: str | None = None
        self.interactive = False
        self._cursor: str | None = None

    def turn(self, message: str | None, *, regenerate: bool = False) -> int:
        """Send a message (or regenerate the last reply) and show the reply: the exit status."""
        view = TurnView(color=self.terminal.color)
        follower = TurnFollower(self.api, self.session_id, view, self.terminal.emit)
        with ctrl_c_stops(follower):
            try:
                response = self.api.start_turn(
                    self.session_id, message, regenerate=regenerate, on_conflict=self.on_conflict
                )
            except ApiError as exc:
                if exc.code != "turn_in_progress" or not self.interactive:
                    self.terminal.error(f"copilot chat: {exc.message} ({exc.code})")
                    return 1
                # Interactive: show the running turn to its end, then send the message.
                self.terminal.note("[a turn is running in this session: following it first]")
                status = self.follow(None)
                return (
                    status if status == INTERRUPTED else self.turn(message, regenerate=regenerate)
                )
            return self._outcome(follower, response)

    def follow(self, response: httpx.Response | None) -> int:
        """Show a turn that is running already (`response` None: resume the session's)."""
        view = TurnView(color=self.terminal.color)
        follower = TurnFollower(self.api, self.session_id, view, self.terminal.emit)
        with ctrl_c_stops(follower):
            return self._outcome(follower, response)

    def _outcome(self, follower: TurnFollower, response: httpx.Response | None) -> int:
        try:
            view = follower.run(response)
        except ConnectionLost as exc:
            self.terminal.error(f"copilot chat: {exc}")
            return 1
        if self.interactive and (line := usage_line(view.metadata)):
            self.terminal.note(f"[{line}]")
        if follower.stop_requested:
            return INTERRUPTED
        return 1 if view.error is not None else 0

    def command(self, line: str) -> bool:
        """Run a `/command`; False for /exit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/new":
            self.session_id = new_session_id()
            self.terminal.note(f"[new session {self.session_id}]")
        elif name == "/sessions":
            self.list_sessions(more=arg == "more")
        elif name == "/resume" and arg:
            self.resume(arg)
        elif name == "/retry":
            self.turn(None, regenerate=True)
        else:
            self.terminal.note(HELP)
        return True

    def list_sessions(self, more: bool) -> None:
        """One line per session, newest first; `more` pages on."""
        if more and self._cursor is None:
            self.terminal.note("[no more sessions]")
            return
        page = self.api.sessions(self._cursor if more else None)
        self._cursor = page.get("next_cursor")
        rows: list[Write] = []
        for s in page["sessions"]:
            mark = "*" if s["id"] == self.session_id else " "
            title = s.get("title") or "(untitled)"
            when = str(s.get("updated_at", ""))[:16].replace("T", " ")
            rows.append(("out", f"{mark} {s['id']}  {s['status']:<7}  {when}  {title}\n"))
        self.terminal.emit(rows or [("out", "(no sessions)\n")])
        if self._cursor:
            self.terminal.note("[/sessions more: older sessions]")

    def resume(self, session_id: str) -> None:
        """Make `session_id` current: print its history, follow its running turn."""
        session: dict[str, Any] = self.api.session(session_id)
        self.session_id = session_id
        self.terminal.note(f"[session {session_id}: {session.get('title') or '(untitled)'}]")
        for message in self.api.messages(session_id):
            self.terminal.emit(message_writes(message, self.terminal.color))
        if session.get("status") in ("running", "queued"):
            self.follow(None)

    def repl(self, stdin: TextIO) -> int:
        """Read messages and commands until /exit, Ctrl-D or Ctrl-C at the prompt."""
        self.interactive = True
        prompt = "you> " if stdin.isatty() else ""
        if prompt:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
        self.terminal.note(f"[copilot chat · {self.api.base_url} · session {self.session_id}]")
        self.terminal.note("[/help for commands]")
        while True:
            try:
                line = input(prompt).strip() if prompt else stdin.readline()
            except (EOFError, KeyboardInterrupt):
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # quitting: a second ^C is moot
                self.terminal.emit([("out", "\n")] if prompt else [])
                return 0
            if not prompt:
                if not line:
                    return 0  # end of input
                line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return 0
                else:
                    self.turn(line)
            except ApiError as exc:
                self.terminal.error(f"{exc.message} ({exc.code})")
            except httpx.HTTPError as exc:
                self.terminal.error(f"cannot reach {self.api.base_url}: {exc}")


def main(argv: Sequence[str]) -> int:
    """Run `copilot chat` with its arguments; the exit status."""
    parser = argparse.ArgumentParser(prog="copilot chat", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    terminal = Terminal(sys.stdout, sys.stderr, color)
    api = CopilotAPI(args.url, token=args.token, api_key=args.api_key)
    client = ChatClient(api, terminal, args.session)
    client.on_conflict = args.on_conflict
    try:
        if args.message is not None:
            return client.turn(args.message)
        if args.session:
            client.interactive = True
            try:
                client.resume(args.session)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                terminal.note(f"[new session {args.session}]")  # its first message creates it
        return client.repl(sys.stdin)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        terminal.emit([("out", "\n")] if color else [])
        return INTERRUPTED
    except ApiError as exc:
        terminal.error(f"copilot chat: {exc.message} ({exc.code})")
        return 1
    except httpx.HTTPError as exc:
        terminal.error(f"copilot chat: cannot reach {api.base_url}: {exc}")
        return 1
    finally:
        api.close()
