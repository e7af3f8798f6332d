"""The `claude_sdk` backend: each turn is a `query()` on the session's Claude Code CLI.

A turn takes the session's warm client when it saw the whole stored transcript (`pool.py`),
else resumes the CLI from Postgres (`resume=` the CLI session id found in the transcript, with
our `SessionStore`: the SDK loads the entries and writes them into a temporary config dir the
CLI resumes from), else starts a fresh CLI session; one that had history to lose is seeded with
a text rendering of it and marks `request.extra["fresh_session"] = True` for the runner.

The context ladder (`TurnRequest.context_rung`): rung 1 is the CLI's own transcript, which the
CLI compacts by itself at `compact_at` of the model's window (`compaction_env`: the same
`ContextSettings` as the other backend; each compaction is a `ContextChange`, `mapping.py`).
On rungs 2 and 3 the runner has put a context of its own in `history` (compacted, or the
newest messages that fit): the session's warm CLI is closed and a fresh CLI session, in a new
transcript generation, is seeded with it. A turn that ends with `prompt_too_long` discards its
CLI: its transcript no longer fits, and it would send the same one again.

Reading: the SDK's stream is read by a pump task that is never cancelled while a read is
pending (cancelling its `__anext__` loses messages); the turn waits on a queue with the idle
timeout instead. A stop (`TurnControl.stop`) is `interrupt()`: the CLI ends the turn with a
`ResultMessage` (`terminal_reason` aborted_*), which this reads before returning normally,
so the client stays warm. The CLI's stream ends a turn only at `ResultMessage`.

Failures: API errors arrive in the `ResultMessage` (`mapping.result_error`). An exception or a
stream that ends without a result means the CLI died: `upstream_unavailable` (retryable), the
client discarded. No message for `idle_timeout_s`, or `max_empty_tool_calls` failing tool calls
without input in a row, is `agent_stalled`. A client left mid-turn for any reason is discarded,
never reused. An attempt that ends with an API error before anything visible (one the
runner may try again, or climb the context ladder from) is rolled back: its transcript entries
are deleted and its CLI, which remembers them, closed; the next attempt resumes from before it
and sends the message whole. After visible output the CLI stays warm with what the user saw.
The CLI's own retries are capped (`CLAUDE_CODE_MAX_RETRIES`): its retries are
invisible and slow; the runner's policy retries only while nothing visible was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    HookMatcher,
    Message,
    ResultMessage,
)

from app.backends.claude_sdk.hooks import SteeringHook
from app.backends.claude_sdk.mapping import TurnMapper
from app.backends.claude_sdk.pool import ClientPool, LiveClient
from app.backends.claude_sdk.ports import Toolset, Transcripts, Workspace, Workspaces
from app.backends.claude_sdk.prompt import seed_text, user_content, user_message
from app.backends.claude_sdk.spawning import BootSlots
from app.backends.errors import UpstreamError
from app.backends.events import (
    AgentEvent,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallReady,
    ToolCallStart,
    ToolResult,
    TurnControl,
    TurnRequest,
)
from app.config import ContextSettings, SdkSettings, blanked_server_environment
from app.observability.redaction import UserText

log = logging.getLogger(__name__)

INTERRUPT_TIMEOUT_S = 5.0
# Events the user sees: an attempt that yielded one is not tried again by the runner.
SHOWN = (TextDelta, ReasoningDelta, ToolCallStart, ToolCallDelta, ToolCallReady, ToolResult)
_END = object()


class ClaudeSDKBackend:
    """Runs turns on per-session Claude Code CLI processes, warm between turns."""

    name = "claude_sdk"
    manages_context = True  # the CLI's transcript, which the CLI compacts by itself

    def __init__(
        self,
        settings: SdkSettings,
        *,
        model: str,
        system_prompt: str,
        workspaces: Workspaces,
        transcripts: Transcripts,
        toolset: Toolset,
        api_key: str | None = None,
        base_url: str | None = None,
        max_tool_rounds: int = 8,
        context: ContextSettings | None = None,
    ) -> None:
        self.settings = settings
        self.context = context or ContextSettings()
        self.model = model
        self.system_prompt = system_prompt
        self.workspaces = workspaces
        self.transcripts = transcripts
        self.toolset = toolset
        self.api_key = api_key
        self.base_url = base_url
        self.max_tool_rounds = max_tool_rounds
        self.stop_grace_s = settings.stop_grace_s
        self.pool = ClientPool(settings.max_live, settings.idle_s)
        self.boots = BootSlots(settings.boot_limit)

    def classify(self, exc: BaseException) -> UpstreamError:
        """Map a failure of a turn onto the shared taxonomy."""
        if isinstance(exc, UpstreamError):
            return exc
        if isinstance(exc, ClaudeSDKError | OSError):
            return UpstreamError("upstream_unavailable", f"the CLI failed: {exc}")
        return UpstreamError("internal", f"{type(exc).__name__}: {exc}")

    def census(self) -> dict[str, int]:
        """This replica's CLI processes, for `/metrics` (`ClientPool.census`)."""
        return self.pool.census()

    async def forget_session(self, session_id: str) -> None:
        """Close the session's CLI and delete its workspace (the transcript rows go with the
        session's rows)."""
        await self.pool.forget(session_id)
        await self.workspaces.remove(session_id)

    async def close(self) -> None:
        """Close every CLI process."""
        await self.pool.close()

    # -- a turn -------------------------------------------------------------------------

    async def run(self, request: TurnRequest, control: TurnControl) -> AsyncIterator[AgentEvent]:
        """Stream one attempt: the new user message sent to the session's CLI, its answer."""
        if not request.history or request.history[-1].get("role") != "user":
            raise UpstreamError("invalid_request", "there is no user message to answer")
        live, workspace, seeded = await self._client_for(request)
        if live.steering is not None:
            live.steering.control = control
        before = live.position
        mapper = TurnMapper(request.turn_id, request.model, self.toolset.public_name)
        clean = False
        shown = False
        try:
            blocks = user_content(request.history[-1], workspace.path)
            if seeded:
                seed = seed_text(request.history[:-1], shortened=request.context_rung >= 2)
                blocks.insert(0, {"type": "text", "text": seed})
            await live.client.query(_single(user_message(blocks)))
            async for message in self._messages(live, control, mapper):
                for event in mapper.feed(message):
                    shown = shown or isinstance(event, SHOWN)
                    yield event
                if mapper.empty_tool_errors >= self.settings.max_empty_tool_calls:
                    raise UpstreamError(
                        "agent_stalled", f"{mapper.empty_tool_errors} failing empty tool calls"
                    )
                if isinstance(message, ResultMessage):
                    break
            if mapper.result is None:
                for event in mapper.close():
                    yield event
                raise UpstreamError("upstream_unavailable", "the CLI ended without a result")
            error = mapper.error()
            if error is not None and (not shown or error.code == "prompt_too_long"):
                # An attempt the runner may try again (or climb the ladder from) leaves
                # nothing behind: what it stored is forgotten and its CLI, which remembers
                # it, closed; the next attempt resumes from before it. A CLI whose
                # transcript no longer fits is stuck for good in any case.
                await self.transcripts.roll_back(request.session_id, before)
                raise error
            clean = True
            if error is not None:
                raise error  # after visible output: the CLI keeps what the user saw
            yield mapper.finished()
        finally:
            live.booted()
            if live.steering is not None:
                live.steering.control = None
            if clean:
                self.pool.put_back(live)
            else:
                self.pool.discard(live)

    async def _messages(
        self, live: LiveClient, control: TurnControl, mapper: TurnMapper
    ) -> AsyncIterator[Message]:
        """The turn's messages up to its `ResultMessage`, read by a pump task that is never
        cancelled mid-read; a stop becomes `interrupt()`."""
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for message in live.client.receive_response():
                    queue.put_nowait(message)
            except Exception as exc:
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(_END)

        live.reader = asyncio.create_task(pump(), name=f"sdk-pump-{live.session_id}")
        stopping = asyncio.ensure_future(control.stop.wait())
        interrupted = False
        getter: asyncio.Future[Any] | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(queue.get())
                waits: set[asyncio.Future[Any]] = {getter}
                if not interrupted:
                    waits.add(stopping)
                deadline = time.monotonic() + self.settings.idle_timeout_s
                done, _ = await asyncio.wait(
                    waits, timeout=self.settings.idle_timeout_s, return_when="FIRST_COMPLETED"
                )
                if stopping in done and not interrupted:
                    interrupted = mapper.stopping = True
                    await self._interrupt(live)
                if getter not in done:
                    if time.monotonic() >= deadline:
                        raise UpstreamError(
                            "agent_stalled",
                            f"no message from the CLI for {self.settings.idle_timeout_s:g} s",
                        )
                    continue
                item = getter.result()
                getter = None
                live.booted()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise UpstreamError("upstream_unavailable", f"the CLI failed: {item}")
                yield item
        finally:
            stopping.cancel()
            if getter is not None:
                getter.cancel()
            # A pump still reading is left to end with its client, which the caller discards.

    async def _interrupt(self, live: LiveClient) -> None:
        try:
            await asyncio.wait_for(live.client.interrupt(), INTERRUPT_TIMEOUT_S)
        except Exception:
            log.warning("interrupt of session %s failed", live.session_id, exc_info=True)

    # -- clients ------------------------------------------------------------------------

    async def _client_for(self, request: TurnRequest) -> tuple[LiveClient, Workspace, bool]:
        """A client for the session: warm if current, else resumed, else fresh; and whether
        the fresh one must be seeded with the history. On the ladder's rungs 2 and 3 always
        fresh, seeded with the context the runner built."""
        session_id = request.session_id
        rebuilt = request.context_rung >= 2
        stored = await self.transcripts.position(session_id)
        workspace = self.workspaces.for_session(session_id)
        live = self.pool.take(session_id)
        if live is not None:
            if not rebuilt and live.is_current(stored) and live.model == request.model:
                return live, workspace, False
            if rebuilt:
                log.info("session %s: rung %d; a fresh CLI", session_id, request.context_rung)
            else:
                log.info("session %s: the warm CLI is stale; resuming from the store", session_id)
            self.pool.discard(live)
        workspace.cleanup_leftovers()
        if not rebuilt and stored is not None and stored.cli_session_id:
            store = self.transcripts.bind(session_id, stored)
            steering = SteeringHook()
            options = self._options(
                request, workspace, store, steering, resume=stored.cli_session_id
            )
            try:
                live = await self._connect(session_id, options, store, request, steering)
                return live, workspace, False
            except Exception:
                log.warning("session %s: resume failed; starting afresh", session_id, exc_info=True)
        store = self.transcripts.fresh(session_id, stored)
        steering = SteeringHook()
        options = self._options(request, workspace, store, steering, session_id=str(uuid.uuid4()))
        live = await self._connect(session_id, options, store, request, steering)
        seeded = len(await request.full_history()) > 1  # a fresh CLI learns it from the seed
        if not rebuilt and (seeded or stored is not None):  # on rungs 2-3 the runner knows
            request.extra["fresh_session"] = True
        return live, workspace, seeded

    async def _connect(
        self,
        session_id: str,
        options: ClaudeAgentOptions,
        store: Any,
        request: TurnRequest,
        steering: SteeringHook,
    ) -> LiveClient:
        boot = await self.boots.acquire()
        client = ClaudeSDKClient(options)
        try:
            await client.connect()
        except BaseException:
            boot.release()
            await asyncio.shield(_disconnect_quietly(client))
            raise
        live = LiveClient(
            session_id, client, store, model=request.model, boot=boot, steering=steering
        )
        self.pool.adopt(live)
        return live

    def _options(
        self,
        request: TurnRequest,
        workspace: Workspace,
        store: Any,
        steering: SteeringHook,
        *,
        resume: str | None = None,
        session_id: str | None = None,
    ) -> ClaudeAgentOptions:
        env = {
            **blanked_server_environment(),
            **workspace.env(),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(self.settings.max_retries),
            **compaction_env(self.context, request.model),
        }
        if self.api_key:
            env["ANTHROPIC_API_KEY"] = self.api_key
        if self.base_url:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        tools = self.toolset
        hooks = dict(tools.hooks_for(workspace.path)) if tools.hooks_for else {}
        hooks["PostToolUse"] = [*hooks.get("PostToolUse", []), HookMatcher(None, [steering])]
        return ClaudeAgentOptions(
            model=request.model,
            system_prompt=self.system_prompt,
            include_partial_messages=True,
            setting_sources=[],
            cwd=str(workspace.path),
            env=env,
            tools=list(tools.builtin),
            allowed_tools=[*tools.allowed, *tools.builtin],
            mcp_servers={"copilot": tools.server} if tools.server is not None else {},
            hooks=cast(Any, hooks),
            permission_mode="dontAsk",
            session_store=store,
            resume=resume,
            session_id=session_id,
            max_turns=self.max_tool_rounds + 1,
            cli_path=self.settings.cli_path,
            stderr=lambda line: log.debug("claude cli: %s", UserText(line.rstrip())),
        )


def compaction_env(context: ContextSettings, model: str) -> dict[str, str]:
    """When the CLI compacts its transcript: at `compact_at` of the model's window, the window
    read from the same settings as the other backend's."""
    return {
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(context.window_for(model)),
        "CLAUDE_AUTOCOMPACT_PCT_OVERRIDE": str(max(1, round(context.compact_at * 100))),
    }


async def _single(message: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield message


async def _disconnect_quietly(client: ClaudeSDKClient) -> None:
    try:
        await client.disconnect()
    except Exception:
        log.debug("disconnect after a failed connect failed", exc_info=True)
