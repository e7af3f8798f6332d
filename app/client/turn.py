"""Follow one turn's stream to its end: render it, resume it after a drop, stop it on request.

Resuming: every chunk of a turn has an `id:`; the follower remembers the last one and, when
the connection breaks (a transport error, or a body that ends before `[DONE]`), asks
`GET /chat/{id}/stream` with `Last-Event-ID` for what follows, with backoff. The server
replays after that id, so nothing is shown twice; ids at or below it are skipped anyway.
A 204 means no turn runs any more: what the stream could not show is taken from the
stored reply (`GET /sessions/{id}/messages`).

Stopping: `request_stop` may be called from a signal handler. It only sets a flag and sends
`POST /chat/{id}/stop` from a thread, while the stream is read to its `finish` as usual.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from app.client.api import ApiError, CopilotAPI
from app.client.render import TurnView, Write
from app.client.sse import DONE, SSEDecoder

BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

Emit = Callable[[list[Write]], None]


class ConnectionLost(Exception):
    """The stream broke and could not be resumed."""


class TurnFollower:
    """Reads a turn's stream into a `TurnView`, across reconnections."""

    def __init__(
        self,
        api: CopilotAPI,
        session_id: str,
        view: TurnView,
        emit: Emit,
        *,
        backoff: Sequence[float] = BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api, self.session_id, self.view, self.emit = api, session_id, view, emit
        self.backoff, self.sleep = backoff, sleep
        self.last_id: int | None = None
        self.reconnects = 0
        self.stop_requested = False
        self._stop_noted = False
        self._stop_sent: threading.Thread | None = None
        self._stop_confirmed = False

    def request_stop(self) -> None:
        """Ask the server to stop the turn (safe from a signal handler); the stream goes on."""
        self.stop_requested = self.view.stop_requested = True
        self._send_stop()

    def _send_stop(self) -> None:
        def send() -> None:
            # On failure the stream still shows what happened, and a second Ctrl-C quits.
            with contextlib.suppress(httpx.HTTPError, ApiError):
                self._stop_confirmed = self.api.stop(self.session_id)

        self._stop_sent = threading.Thread(target=send, name="copilot-stop", daemon=True)
        self._stop_sent.start()

    def run(self, response: httpx.Response | None) -> TurnView:
        """Follow the turn from `response` (None: resume the session's running turn)."""
        try:
            self._follow(response)
        finally:
            if self._stop_sent is not None:
                self._stop_sent.join(timeout=35)
        return self.view

    def _follow(self, response: httpx.Response | None) -> None:
        failures = 0
        while True:
            if response is None:
                try:
                    response = self.api.resume(self.session_id, self.last_id)
                except httpx.TransportError as exc:
                    failures = self._wait(failures, exc)
                    continue
                if response is None:
                    self._catch_up()
                    return
            seen = self.last_id
            error: Exception | None = None
            try:
                done = self._read(response)
            except httpx.TransportError as exc:
                done, error = False, exc
            finally:
                response.close()
            response = None
            if done or self.view.finished:
                self.emit(self.view.finish(self.view.finish_reason))
                return
            if self.last_id != seen:
                failures = 0
            failures = self._wait(failures, error or ConnectionLost("the stream ended early"))

    def _wait(self, failures: int, cause: Exception) -> int:
        """Sleep before the next attempt; ConnectionLost once the attempts are used up."""
        if failures >= len(self.backoff):
            self.emit(self.view.end_line())
            raise ConnectionLost(f"lost the connection to the server: {cause}") from cause
        if failures == 0:
            self.emit(self.view.note("connection lost: resuming"))
        self.reconnects += 1
        self.sleep(self.backoff[failures])
        return failures + 1

    def _read(self, response: httpx.Response) -> bool:
        """Render the response's chunks; whether `[DONE]` came."""
        decoder = SSEDecoder()
        for raw in response.iter_bytes():
            for event in decoder.feed(raw):
                if self.stop_requested and not self._stop_noted:
                    self._stop_noted = True
                    self.emit(self.view.note("stopping: Ctrl-C again to quit"))
                if event.data == DONE:
                    return True
                if event.id is not None and event.id.lstrip("-").isdigit():
                    seq = int(event.id)
                    if self.last_id is not None and seq <= self.last_id:
                        continue
                    self.last_id = seq
                chunk = _chunk(event.data)
                if chunk is None:
                    continue
                if (
                    chunk.get("type") == "start"
                    and self.stop_requested
                    and not self._stop_confirmed
                ):
                    self._send_stop()  # the first stop came before the turn had started
                self.emit(self.view.render(chunk))
        return False

    def _catch_up(self) -> None:
        """No turn runs any more: show the rest of the reply as the server stored it."""
        if self.view.finished:
            return
        try:
            history = self.api.messages(self.session_id)
        except (httpx.HTTPError, ApiError):
            history = []
        reply = _stored_reply(history, self.view.turn_id)
        if reply is None:
            self.emit(self.view.finish(self.view.finish_reason))
        else:
            self.emit(self.view.catch_up(reply))


def _chunk(data: str) -> dict[str, Any] | None:
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return dict(chunk) if isinstance(chunk, dict) else None


def _stored_reply(history: list[dict[str, Any]], turn_id: str | None) -> dict[str, Any] | None:
    """The stored reply of `turn_id`, or (not known) the last message if it is a reply."""
    if turn_id is not None:
        for message in reversed(history):
            if (message.get("metadata") or {}).get("turnId") == turn_id:
                return dict(message)
        return None
    if history and history[-1].get("role") == "assistant":
        return history[-1]
    return None
