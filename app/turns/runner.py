"""The TurnRunner: the producer of one turn.

It drives the backend, turns events into chunks, keeps every encoded frame in memory for
consumers on this replica, queues them for the EventLog (`TurnMaintenance` writes its partial
reply every few seconds) and writes the final state under a shield, whatever ends it: success,
an upstream error, a stop, or the server shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.backends.errors import UpstreamError
from app.backends.events import Backend, TurnControl, TurnRequest, UsageReport
from app.config import TurnSettings
from app.context.ladder import COMPACTED_RUNG, DB_ONLY_RUNG, ContextLadder
from app.coord.lock import Lease
from app.coord.slots import UserSlot
from app.observability.log_context import turn_context
from app.observability.redaction import UserText
from app.store.queue import MessageQueue
from app.store.turn_rows import TurnEnd, TurnRows
from app.store.usage import Usage
from app.stream import chunks
from app.stream.eventlog import EventLogWriter
from app.stream.frames import FrameBuffer
from app.stream.sse import frame
from app.stream.text import parts_text
from app.turns.adapter import ChunkAdapter
from app.turns.observer import OBSERVED_EVENTS, MetricsObserver, TurnObserver, notify
from app.turns.persist import Attempt, persist_final
from app.turns.reply import ReplyAssembler
from app.turns.retry import RetryPolicy

log = logging.getLogger(__name__)

# Why a turn was interrupted, by stop reason (the stored error detail).
INTERRUPTIONS = {
    "shutdown": "the server shut down mid-reply",
    "lease_lost": "the session's lease was lost: another turn may have taken over",
}
YIELD_EVERY = 32  # backend events handled between two turns of the event loop, at most


@dataclass
class TurnOutcome:
    """How the turn ended."""

    status: str = "completed"
    finish_reason: str = "stop"
    error: UpstreamError | None = None
    note_code: str | None = None


@dataclass
class TurnServices:
    """What every turn on this replica shares."""

    rows: TurnRows
    settings: TurnSettings
    eventlog: EventLogWriter
    backend: Backend
    ladder: ContextLadder | None = None
    replica_id: str = ""
    # The sessions' queues, where messages that steer a running turn wait to be taken in.
    queue: MessageQueue | None = None
    on_done: list[Callable[[TurnRunner], None]] = field(default_factory=list)
    observers: list[TurnObserver] = field(default_factory=lambda: [MetricsObserver()])


def _ignore(chunk: dict[str, Any]) -> None:
    """What a finished turn's adapter emits to: nothing."""


class TurnRunner:
    """Produces one turn; consumers read its frames from any index while it runs."""

    def __init__(
        self,
        services: TurnServices,
        request: TurnRequest,
        *,
        assistant_message_id: str,
        events_key: str,
        lease: Lease | None,
        slot: UserSlot | None = None,
        on_started: Callable[[], None] | None = None,
        trigger: str = "submit-message",
        on_conflict: str = "reject",
    ) -> None:
        self.services = services
        self.request = request
        self.trigger = trigger
        self.on_conflict = on_conflict
        self.trace_id: str | None = None  # set by a tracing observer when the turn starts
        self.session_id = request.session_id
        self.turn_id = request.turn_id
        self.turn_uuid = uuid.UUID(request.turn_id)
        self.cost = Decimal(0)
        self.assistant_message_id = assistant_message_id
        self.events_key = events_key
        self.lease = lease
        self.slot = slot  # the user's place among their running turns, if capped
        self.buffer = FrameBuffer()
        self.reply = ReplyAssembler()
        self.adapter = ChunkAdapter(self._emit)
        self.outcome = TurnOutcome()
        self.attempts: list[Attempt] = []
        # The tokens before and after the last climb of the context ladder, for its attempt.
        self._climbed: tuple[int | None, int | None] = (None, None)
        self._billed = Usage()  # usage when the last attempt ended: the next one bills from it
        self._loaded: list[dict[str, Any]] | None = None  # the whole history, once needed
        self.started = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.first_visible_at: datetime | None = None
        self.control = TurnControl(steer=self.take_steers)
        self._steers_waiting = False  # a message waits to steer this turn (`steers_waiting`)
        self.waiting_after = 0  # messages waiting in the session's queue once it was stored
        self.task: asyncio.Task[None] | None = None
        self._on_started = on_started
        self._started = False
        self._final_write: asyncio.Task[None] | None = None
        self._released = asyncio.Event()
        # Set at the first visible output, or at the end: work that must not compete with
        # the reply's first token (the session's title) waits for it.
        self.shown = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._last_flush_at = self._lease_refreshed_at = self._loop.time()

    # -- frames, for consumers -------------------------------------------------------------

    def _emit(self, chunk: dict[str, Any]) -> None:
        if self.first_visible_at is None and self.adapter.visible:
            self.first_visible_at = datetime.now(UTC)
            self.shown.set()
        encoded = frame(len(self.buffer), chunk)
        if not chunk.get("transient"):
            self.reply.apply(chunk)
        self.services.eventlog.append(self.events_key, encoded)
        self.buffer.append(encoded)

    @property
    def done(self) -> bool:
        """The streams have ended (the final write is done, or is being retried)."""
        return self.buffer.done

    def frames_from(self, index: int) -> AsyncGenerator[bytes, None]:
        """Frames from `index` on, then live ones, `: ping` while idle, `[DONE]` at the end."""
        return self.buffer.read_from(index)

    def ping_if_idle(self, now: float) -> None:
        """Wake the consumers for a `: ping` after `COPILOT_HEARTBEAT_S` without a frame."""
        self.buffer.ping_if_idle(now, self.services.settings.heartbeat_s)

    def partial_due(self, now: float) -> list[dict[str, Any]] | None:
        """The reply's parts if it changed and was not stored for `COPILOT_FLUSH_INTERVAL_S`."""
        if self.done or not self.reply.dirty:
            return None
        if now - self._last_flush_at < self.services.settings.flush_interval_s:
            return None
        self._last_flush_at = now
        return self.reply.parts()

    def lease_due(self, now: float) -> Lease | None:
        """The lease, when a third of its time has passed since the last refresh."""
        if self.lease is None or self._released.is_set():
            return None
        if now - self._lease_refreshed_at < self.lease.ttl_ms / 3000:
            return None
        self._lease_refreshed_at = now
        return self.lease

    # -- the producer ----------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start producing in a task of its own.

        The task outlives the request that started it: it runs in a copy of the request's
        context with the turn's ids bound, so its log lines (and those of every task it
        starts: the backend's, the final write) name the request, user, session and turn."""
        ids = turn_context(
            session_id=self.session_id, turn_id=self.turn_id, user_id=self.request.user_id
        )
        self.task = asyncio.create_task(self._run(), name=f"turn-{self.turn_id}", context=ids)
        return self.task

    def steers_waiting(self) -> None:
        """A message was queued to steer this turn: take it in at the next model call."""
        self._steers_waiting = True

    async def take_steers(self) -> list[str]:
        """The messages waiting to steer this turn, taken in (called by the backend between
        two model calls): each shown in the stream, and stored in the reply, as a
        `data-steer` part where it joined; their texts, for the next call. None while no
        message was announced, or once the turn is stopping (they become queued turns)."""
        if not self._steers_waiting or self.services.queue is None or self.stop_reason:
            return []
        self._steers_waiting = False
        taken = await self.services.queue.claim_steers(self.session_id, self.turn_uuid)
        texts = []
        for message in taken:
            text = parts_text(message.parts)
            self._emit(chunks.data_steer(message.message_id, text))
            texts.append(text)
        if taken:
            log.info("turn %s: %d message(s) joined it", self.turn_id, len(taken))
        return texts

    def stop(self, reason: str = "stopped") -> bool:
        """Ask the turn to stop (user stop, session deletion, shutdown).

        The backend is asked first (`TurnControl`): one that can stop cleanly ends its attempt
        with what it has. Cancelling the task is the last resort, `Backend.stop_grace_s`
        later (at once for a backend whose stream can simply be dropped)."""
        if self.task is None or self.task.done():
            return False
        self.control.request_stop(reason)
        if self._started:
            # A task cancelled before its first step would never run `_run`'s `finally`:
            # one that has not started sees `stop_reason` when it does.
            grace = self.services.backend.stop_grace_s
            if grace <= 0:
                self.task.cancel(self.stop_reason)
            else:
                self._loop.call_later(grace, self._cancel_if_running)
        return True

    @property
    def stop_reason(self) -> str | None:
        """Why a stop was asked for (the first reason given), if one was."""
        return self.control.reason

    def _cancel_if_running(self) -> None:
        if self.task is not None and not self.task.done() and self._final_write is None:
            log.warning("turn %s: backend did not stop in time; cancelling", self.turn_id)
            self.task.cancel(self.stop_reason)

    async def _run(self) -> None:
        self._started = True
        if self._on_started is not None:
            self._on_started()
        notify(self.services.observers, "turn_started", self)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "turn %s started: %s",
                self.turn_id,
                UserText(parts_text(self.request.history[-1].get("parts", []))),
            )
        self._emit(chunks.start(self.assistant_message_id, {"turnId": self.turn_id}))
        try:
            if self.stop_reason is not None:
                raise asyncio.CancelledError(self.stop_reason)
            await self._attempts()
            if self.stop_reason is not None:
                self._stopped()  # the backend honoured the stop and ended by itself
        except asyncio.CancelledError:
            self._stopped()
        except Exception as exc:
            log.exception("turn %s failed unexpectedly", self.turn_id)
            self.adapter.end_step()
            self._fail(UpstreamError("internal", f"{type(exc).__name__}: {exc}"))
        finally:
            self._finish()
            self._final_write = asyncio.ensure_future(self._write_final())
            await asyncio.shield(self._final_write)

    def _stopped(self) -> None:
        reason = self.stop_reason or "interrupted"
        self.outcome = TurnOutcome(
            status="stopped" if reason == "stopped" else "interrupted", finish_reason="other"
        )
        self.adapter.end_step()
        if reason != "stopped":
            self._fail(UpstreamError("interrupted", INTERRUPTIONS.get(reason, reason)))

    async def _attempts(self) -> None:
        policy = RetryPolicy.from_settings(self.services.settings)
        reason = None
        if self._compacts_ahead():
            reason = "proactive"
            if not await self._climb(COMPACTED_RUNG, reason):
                return
        number = 0
        while True:
            number += 1
            attempt = Attempt(number, self.request.context_rung, datetime.now(UTC))
            attempt.reason = reason or ("retry" if number > 1 else None)
            if reason is not None:  # it runs on the context a climb just built
                attempt.tokens_before, attempt.tokens_after = self._climbed
                self._climbed = (None, None)
            reason = None
            self.attempts.append(attempt)
            observers = self.services.observers
            notify(observers, "attempt_started", self, attempt)
            try:
                handled = 0
                async for event in self.services.backend.run(self.request, self.control):
                    self.adapter.handle(event)
                    if isinstance(event, OBSERVED_EVENTS):
                        notify(observers, "event", self, event)
                    handled += 1
                    if handled % YIELD_EVERY == 0:
                        # Events already buffered (a fast upstream) arrive without the backend
                        # ever suspending: let the rest of the event loop run now and then.
                        await asyncio.sleep(0)
                self._attempt_ended(attempt)
                finished = self.adapter.finished
                if finished is not None:
                    self.outcome.finish_reason = finished.reason
                    self.outcome.note_code = finished.error_code
                return
            except Exception as exc:
                error = self.services.backend.classify(exc)
                self._attempt_ended(attempt)
                attempt.error_code = error.code
                self.adapter.end_step()
                if self._may_climb(error):
                    reason = error.code
                    if await self._climb(self.request.context_rung + 1, reason):
                        continue
                    return
                delay = None
                if error.retryable and not self.adapter.visible and self.stop_reason is None:
                    elapsed = time.monotonic() - self.started
                    delay = policy.delay(number, elapsed, error.retry_after_s)
                notify(self.services.observers, "attempt_failed", self, error, delay)
                if delay is None:
                    self._fail(error)
                    return
                log.info("turn %s: %s, retrying in %.2fs", self.turn_id, error.code, delay)
                self._emit(
                    chunks.data_status(
                        "retrying", attempt=number + 1, code=error.code, delay_s=round(delay, 3)
                    )
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.control.stop.wait(), delay)
                if self.stop_reason is not None:
                    return

    # -- the context ladder (app/context/ladder.py) ------------------------------------------

    def _compacts_ahead(self) -> bool:
        """Compact before the first call: the history is the context and is past the target."""
        ladder = self.services.ladder
        return (
            ladder is not None
            and not self.services.backend.manages_context
            and self.request.context_rung == 1
            and ladder.over_target(self.request)
        )

    def _may_climb(self, error: UpstreamError) -> bool:
        return (
            error.code == "prompt_too_long"
            and self.services.ladder is not None
            and not self.adapter.visible
            and self.stop_reason is None
        )

    async def _climb(self, rung: int, reason: str) -> bool:
        """Move the request to `rung` (or past it); False when the turn ended instead
        (`context_exhausted`)."""
        ladder = self.services.ladder
        assert ladder is not None
        if rung <= DB_ONLY_RUNG:
            self._emit(chunks.data_status("compacting", rung=rung, reason=reason))
            if self._loaded is None:  # the history as loaded: the DB-only rung starts from it
                self._loaded = list(await self.request.full_history())
            climb = await ladder.climb(self.request, rung, reason, self._loaded)
        else:
            climb = None
        if climb is None or climb.exhausted:
            self._fail(UpstreamError("context_exhausted", "the message alone exceeds the window"))
            return False
        if climb.usage is not None:
            self.adapter.handle(UsageReport(climb.usage, climb.model))
        if climb.change is not None:
            self.adapter.handle(climb.change)
            self._climbed = (climb.change.tokens_before, climb.change.tokens_after)
        notify(self.services.observers, "climbed", self, climb, reason)
        log.info("turn %s: context rung %d (%s)", self.turn_id, climb.rung, reason)
        return True

    def _attempt_ended(self, attempt: Attempt) -> None:
        attempt.finished_at = datetime.now(UTC)
        # What the attempt was billed, with the climb that built its context (it came after
        # the previous attempt ended).
        now, then = dataclasses.replace(self.adapter.usage), self._billed
        attempt.input_tokens = now.all_input_tokens - then.all_input_tokens
        attempt.output_tokens = now.output_tokens - then.output_tokens
        self._billed = now
        if self.request.extra.get("fresh_session"):
            # The backend could not resume its own context and started afresh from the
            # stored messages: the DB-only rung of the context ladder.
            attempt.context_rung = DB_ONLY_RUNG

    def _fail(self, error: UpstreamError) -> None:
        """End with `data-error`, the usage so far, then `error` (where the AI SDK stops)."""
        self.outcome.status = (
            "failed" if self.outcome.status == "completed" else self.outcome.status
        )
        self.outcome.finish_reason = "error"
        self.outcome.error = error
        retry_after = error.retry_after_s if error.retryable else None
        self._emit(
            chunks.data_error(error.code, error.public_message, error.retryable, retry_after)
        )
        self._emit(chunks.message_metadata(self._metadata()))
        self._emit(chunks.error(f"{error.code}: {error.public_message}"))

    def _metadata(self) -> dict[str, Any]:
        usage = self.adapter.usage
        self.cost = usage.cost(self.services.settings.rate_for(self.request.model))
        return {
            "turnId": self.turn_id,
            "model": self.request.model,
            "usage": usage.as_dict(),
            "costUsd": float(self.cost),
        }

    def _finish(self) -> None:
        self._emit(chunks.finish(self.outcome.finish_reason, self._metadata()))

    # -- persistence -----------------------------------------------------------------------

    def _final_state(self) -> TurnEnd:
        finished_at = datetime.now(UTC)
        error = self.outcome.error
        ms = timedelta(milliseconds=1)
        first = self.first_visible_at
        return TurnEnd(
            session_id=self.session_id,
            turn_id=self.turn_uuid,
            message_id=self.assistant_message_id,
            parts=self.reply.parts(),
            message_status={"completed": "complete", "failed": "error"}.get(
                self.outcome.status, self.outcome.status
            ),
            metadata={**self._metadata(), "finishReason": self.outcome.finish_reason},
            status=self.outcome.status,
            finish_reason=self.outcome.finish_reason,
            error_code=error.code if error else self.outcome.note_code,
            error_message=error.detail[:2000] if error else None,
            attempt_log=[attempt.as_row(finished_at) for attempt in self.attempts],
            first_token_at=first,
            finished_at=finished_at,
            ttft_ms=int((first - self.started_at) / ms) if first is not None else None,
            duration_ms=int((finished_at - self.started_at) / ms),
            usage=self.adapter.usage,
            cost=self.cost,
            trace_id=self.trace_id,
        )

    async def _write_final(self) -> None:
        """Persist the final state; if Postgres is slow to take it, end the streams meanwhile."""
        try:
            stored = await persist_final(self.services.rows, self._final_state(), self._end_streams)
            self.waiting_after = stored or 0
        except Exception:
            log.exception("turn %s: final write failed unexpectedly", self.turn_id)
        await self._release()  # whatever happened: the session is never left busy

    def _end_streams(self) -> None:
        if self.buffer.end():
            self.services.eventlog.end(self.events_key)

    async def _release(self) -> None:
        """Free the user's slot and the session, then end the streams: a client may send its
        next message at once."""
        if self.slot is not None:
            await self.slot.release()
        if self.lease is not None:
            await self.lease.release_or_retry()
        self._released.set()
        self.shown.set()
        self._end_streams()
        if log.isEnabledFor(logging.DEBUG):
            reply = UserText(parts_text(self.reply.parts()))
            log.debug("turn %s %s: %s", self.turn_id, self.outcome.status, reply)
        notify(self.services.observers, "turn_finished", self)
        for callback in self.services.on_done:
            callback(self)
        # The adapter's emit and the control's steer callback are this runner's own methods:
        # cycles that kept every finished runner (its frames, its reply) for the collector's
        # full passes, 12-30 ms each under load. Broken, a runner goes when its last reader
        # lets go.
        self.adapter.emit = _ignore
        self.control.steer = None

    async def wait_persisted(self) -> None:
        """Wait until the final write is done and the session released."""
        await self._released.wait()

    @property
    def stopping(self) -> bool:
        """A stop was asked for and the turn has not finished yet."""
        return self.stop_reason is not None and not self.done
