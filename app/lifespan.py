"""Opens every client when the app starts and closes them, in reverse order, when it stops."""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from redis.asyncio import Redis, RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.auth import Authenticator
from app.config import Settings
from app.coord.redis import Keys, create_redis
from app.store.db import connect_args, create_engine, create_session_factory
from app.store.turn_rows import TurnRows
from app.turns.drain import Drain
from app.turns.services import TurnContext

if TYPE_CHECKING:
    from app.observability.tracing import Tracer

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """Everything a request or a turn reaches: opened in the lifespan, typed, never global."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    turn_rows: TurnRows
    redis: Redis | RedisCluster
    redis_readers: Redis | RedisCluster
    keys: Keys
    auth: Authenticator
    turns: TurnContext | None = None
    tracer: Tracer | None = None
    drain: Drain = field(default_factory=Drain)


def lifespan_for(settings: Settings) -> Any:
    """The lifespan context of an app built for `settings`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            engine = create_engine(settings.database)
            stack.push_async_callback(engine.dispose)
            redis = create_redis(settings.redis)
            stack.push_async_callback(redis.aclose)
            readers = create_redis(settings.redis, blocking_reads=True)
            stack.push_async_callback(readers.aclose)
            assert settings.database.url is not None
            turn_rows = await TurnRows.open(
                settings.database.url,
                settings.database.turn_pool_size,
                connect_args(settings.database.url),
            )
            stack.push_async_callback(turn_rows.close)
            state = AppState(
                settings=settings,
                engine=engine,
                sessions=create_session_factory(engine),
                turn_rows=turn_rows,
                redis=redis,
                redis_readers=readers,
                keys=Keys(settings.redis.key_prefix),
                auth=Authenticator(settings.auth),
            )
            # Opened before the turns and closed after them: the last turns' spans are
            # flushed once every turn has ended.
            state.tracer = _open_tracer(settings)
            if state.tracer is not None:
                stack.push_async_callback(state.tracer.close)
            state.turns = await stack.enter_async_context(_turn_machinery(state))
            app.state.copilot = state
            log.info("copilot-server ready (auth: %s)", "local" if state.auth.local else "on")
            yield

    return lifespan


def _open_tracer(settings: Settings) -> Tracer | None:
    """The Langfuse client when both keys are set; nothing (and no log) when neither is."""
    langfuse = settings.langfuse
    if not langfuse.enabled:
        if langfuse.public_key or langfuse.secret_key:
            log.warning("Langfuse tracing is off: set both LANGFUSE_PUBLIC_KEY and _SECRET_KEY")
        return None
    assert langfuse.public_key is not None
    assert langfuse.secret_key is not None
    from app.observability.tracing import Tracer  # the SDK is imported only when it is used

    tracer = Tracer.open(
        public_key=langfuse.public_key,
        secret_key=langfuse.secret_key.get_secret_value(),
        base_url=langfuse.base_url,
        timeout_s=langfuse.timeout_s,
        flush_interval_s=langfuse.flush_interval_s,
        compression=langfuse.otel_compression,
    )
    log.info("Langfuse tracing on: %s", langfuse.base_url)
    return tracer


@contextlib.asynccontextmanager
async def _turn_machinery(state: AppState) -> AsyncIterator[TurnContext]:
    """The model client, backend, EventLog writer and turn registry; drained at shutdown."""
    from app.backends.anthropic_api import create_client
    from app.backends.builtin_tools import register_builtin_tools
    from app.backends.factory import create_backend
    from app.backends.tools import ToolRegistry
    from app.context.compactor import Compactor
    from app.context.ladder import ContextLadder
    from app.observability import metrics
    from app.store.queue import MessageQueue
    from app.stream.eventlog import EventLogWriter
    from app.turns.admission import AdaptiveGate
    from app.turns.maintenance import TurnMaintenance
    from app.turns.queueing import after_turn, kick_soon
    from app.turns.reaper import Reaper
    from app.turns.registry import TurnRegistry
    from app.turns.runner import TurnServices
    from app.turns.stops import StopListener, TurnStopper
    from app.turns.titles import TitleWriter

    settings = state.settings
    async with contextlib.AsyncExitStack() as stack:
        base_url = settings.anthropic.base_url
        if settings.anthropic.simulated:
            from app.devtools.fake_upstream import FakeUpstreamConfig, fake_upstream_task

            demo = FakeUpstreamConfig(default_rate=60)
            fake = await stack.enter_async_context(fake_upstream_task(config=demo))
            base_url = fake.base_url
            log.warning(
                "no ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL: replies are SIMULATED by the "
                "built-in fake upstream at %s",
                base_url,
            )
        client = create_client(settings.anthropic, base_url)
        stack.push_async_callback(client.close)
        tools = ToolRegistry()
        register_builtin_tools(tools)
        transcripts = None
        if settings.turns.backend == "claude_sdk":
            from app.store.transcripts import PostgresTranscripts

            transcripts = PostgresTranscripts(state.turn_rows.pool)
        backend = create_backend(settings, client, tools, transcripts=transcripts)
        stack.push_async_callback(backend.close)
        # A backend that keeps processes (the Claude SDK's warm CLIs) reports them on /metrics.
        metrics.watch_processes(backend)
        eventlog = EventLogWriter(
            state.redis, settings.turns.eventlog_flush_ms / 1000, settings.turns.eventlog_ttl_s
        )
        eventlog.start()
        stack.push_async_callback(eventlog.close)
        registry = TurnRegistry()
        queue = MessageQueue(state.turn_rows.pool)
        compactor = Compactor(settings.context, client, state.turn_rows.pool)
        replica = settings.server.replica_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        services = TurnServices(
            rows=state.turn_rows,
            settings=settings.turns,
            eventlog=eventlog,
            backend=backend,
            ladder=ContextLadder(settings.context, compactor),
            replica_id=replica,
            queue=queue,
            on_done=[registry.done],
        )
        if state.tracer is not None:
            from app.turns.tracing import TracingObserver

            services.observers.append(TracingObserver(state.tracer))
        titles = None
        if settings.turns.title_generation:
            titles = TitleWriter(client, settings.anthropic.title_model, state.turn_rows)
            stack.push_async_callback(titles.close)
        maintenance = TurnMaintenance(registry, state.turn_rows, state.redis, settings.turns)
        maintenance.start()
        stack.push_async_callback(maintenance.close)
        stops = StopListener(state.redis_readers, state.keys, registry, backend.forget_session)
        stops.start()
        stack.push_async_callback(stops.close)
        stack.push_async_callback(registry.shutdown, settings.server.graceful_shutdown_s)

        def report() -> dict[str, Any]:
            census = backend.census() if isinstance(backend, metrics.ProcessCensus) else {}
            return {**census, "draining": state.drain.active}

        reaper = Reaper(
            state.turn_rows,
            state.redis,
            state.keys,
            registry,
            eventlog,
            replica,
            settings.turns.reap_interval_s,
            report,
            queue,
        )
        ctx = TurnContext(
            services=services,
            registry=registry,
            replica_id=replica,
            titles=titles,
            starts=AdaptiveGate(settings.turns.start_concurrency),
            stops=stops,
            stopper=TurnStopper(
                state.redis,
                state.keys,
                registry,
                stops,
                state.sessions,
                cluster=settings.redis.cluster,
            ),
            redis=state.redis,
            keys=state.keys,
            sessions=state.sessions,
            reaper=reaper,
            queue=queue,
            draining=lambda: state.drain.active,
        )
        # A session freed (its turn ended, or was reaped) starts its next queued message.
        services.on_done.append(functools.partial(after_turn, ctx))
        reaper.on_free = functools.partial(kick_soon, ctx)
        await reaper.start()
        stack.push_async_callback(reaper.close)
        yield ctx
