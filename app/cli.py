"""The `copilot` command: serve, migrate, token, fake-upstream, chat."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import ipaddress
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette

from app.config import Settings
from app.observability.logging import setup_logging

if TYPE_CHECKING:
    from app.turns.drain import Drain
    from app.turns.services import TurnContext

log = logging.getLogger("copilot")


class Shutdown(Exception):
    """SIGTERM arrived: unwind so that embedded services stop in order."""


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise Shutdown(signal.Signals(signum).name)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def provisioned(settings: Settings) -> Iterator[Settings]:
    """Settings with database and Redis URLs, starting embedded services for the missing ones."""
    data_dir = settings.server.data_dir
    database, redis = settings.database, settings.redis
    with contextlib.ExitStack() as stack:
        if database.url is None:
            from app.devtools.embedded_postgres import EmbeddedPostgres

            log.info("DATABASE_URL is not set: starting an embedded PostgreSQL in %s", data_dir)
            url = stack.enter_context(EmbeddedPostgres(data_dir)).url
            database = database.model_copy(update={"url": url})
        if redis.url is None:
            from app.coord.embedded_redis import EmbeddedRedis

            log.info("REDIS_URL is not set: starting an embedded Redis in %s", data_dir)
            url = stack.enter_context(EmbeddedRedis(data_dir)).url
            redis = redis.model_copy(update={"url": url})
        yield settings.model_copy(update={"database": database, "redis": redis})


def serve(settings: Settings, host: str, port: int) -> int:
    """Run the HTTP server until SIGTERM or Ctrl-C; embedded services stop with it."""
    if (
        not settings.auth.configured
        and not _is_loopback(host)
        and not settings.server.allow_insecure
    ):
        log.error(
            "refusing to listen on %s without authentication: set COPILOT_JWT_SECRET, "
            "COPILOT_JWT_PUBLIC_KEY or COPILOT_API_KEYS (or COPILOT_ALLOW_INSECURE=1)",
            host,
        )
        return 2
    # Importing the app (the anthropic SDK alone takes seconds) overlaps the embedded
    # services' start-up, which runs in other processes.
    importer = threading.Thread(target=importlib.import_module, args=("app.main",), daemon=True)
    importer.start()
    with provisioned(settings) as ready:
        importer.join()
        from app.connection_limits import head_deadline_protocol
        from app.main import create_app
        from app.store.db import migrate

        if ready.server.migrate_on_start:
            assert ready.database.url is not None
            migrate(ready.database.url)
        app = create_app(ready)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=ready.server.log_level.lower(),
            log_config=None,  # uvicorn's lines go through our handler: JSON, ids, redaction
            timeout_graceful_shutdown=int(ready.server.graceful_shutdown_s),
            lifespan="on",
            access_log=False,
            http=head_deadline_protocol(ready.server.header_timeout_s),
            timeout_keep_alive=ready.server.keepalive_s,
            limit_concurrency=ready.server.max_connections,
        )
        TurnAwareServer(config, app).run()
    return 0


class TurnAwareServer(uvicorn.Server):
    """A uvicorn server that drains on SIGTERM, then interrupts the turns still running.

    uvicorn's own SIGTERM handling stops listening at once and gives open responses its
    graceful timeout. Here SIGTERM first starts a drain (`app/turns/drain.py`): the server
    keeps listening and serving (resume, stop, `/readyz` saying 503) while new chats get 503,
    until no turn runs or `COPILOT_DRAIN_S` is up. Only then is uvicorn asked to exit, and
    the turns still running are interrupted at that moment: their streams end with
    `data-error` (interrupted), `finish` and `[DONE]` within uvicorn's graceful timeout
    (`COPILOT_GRACEFUL_SHUTDOWN_S`) instead of being cut when it ends.
    Ctrl-C (SIGINT), a second SIGTERM, or `COPILOT_DRAIN_S=0` skip or end the drain.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What start-up built (some 250,000 objects: modules, clients, pools) lives as long
        # as the process. Frozen, it is left out of the collector's full passes, each of
        # which otherwise stopped the event loop for 150-200 ms under load (bench/README.md).
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = getattr(self.app.state, "copilot", None)
        if state is None or state.turns is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        loop = asyncio.get_running_loop()
        drain_s = state.settings.server.drain_s
        if sig == signal.SIGTERM and drain_s > 0 and not state.drain.active:
            state.drain.begin()  # not ready from this instant, before the loop runs again
            loop.call_soon_threadsafe(self._start_drain, state.drain, state.turns, drain_s)
            return
        state.drain.begin()
        if self._drain_task is not None:
            loop.call_soon_threadsafe(self._drain_task.cancel)
        loop.call_soon_threadsafe(state.turns.registry.interrupt_all)
        super().handle_exit(sig, frame)

    def _start_drain(self, drain: Drain, turns: TurnContext, drain_s: float) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(
            self._drain_then_stop(drain, turns, drain_s)
        )

    async def _drain_then_stop(self, drain: Drain, turns: TurnContext, drain_s: float) -> None:
        await drain.wait_for_turns(turns.registry, drain_s)
        if not self.should_exit:
            turns.registry.interrupt_all()
            super().handle_exit(signal.SIGTERM, None)


def run_migrate(settings: Settings) -> int:
    """Upgrade the database to the newest migration."""
    from app.store.db import migrate

    with provisioned(settings) as ready:
        assert ready.database.url is not None
        migrate(ready.database.url)
    log.info("database is at the newest migration")
    return 0


def token(settings: Settings, user: str, ttl: int | None) -> int:
    """Print a JWT for `user` signed with COPILOT_JWT_SECRET."""
    from app.api.auth import issue_token

    try:
        print(issue_token(settings.auth, user, ttl))
    except RuntimeError as exc:
        log.error("%s", exc)
        return 2
    return 0


def fake_upstream(host: str, port: int) -> int:
    """Run the fake Anthropic Messages API."""
    from app.devtools.fake_upstream import serve as serve_fake

    serve_fake(host, port)
    return 0


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="copilot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server (embedded services by default)")
    serve_cmd.add_argument("--host", default=settings.server.host)
    serve_cmd.add_argument("--port", type=int, default=settings.server.port)
    commands.add_parser("migrate", help="upgrade the database to the newest migration")
    token_cmd = commands.add_parser("token", help="print a JWT signed with COPILOT_JWT_SECRET")
    token_cmd.add_argument("--user", required=True, help="the user id (the token's sub)")
    token_cmd.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    fake_cmd = commands.add_parser("fake-upstream", help="run the fake Anthropic Messages API")
    fake_cmd.add_argument("--host", default="127.0.0.1")
    fake_cmd.add_argument("--port", type=int, default=8090)
    # Listed for --help; `main` hands `chat` to the client before the settings are read.
    commands.add_parser("chat", help="a terminal client of a running server (chat --help)")
    return parser


def _configuration_problems(exc: ValidationError) -> str:
    """One line per invalid setting; messages name variables and entries, never values."""
    lines = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"  {message}" if "COPILOT_" in message else f"  {where}: {message}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `copilot` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["chat"]:
        # The client talks HTTP to a server that may run anywhere: none of the server's
        # settings (nor a broken one of them) concerns it.
        from app.client.chat import main as chat

        sys.exit(chat(args_list[1:]))
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"copilot: invalid configuration:\n{_configuration_problems(exc)}", file=sys.stderr)
        sys.exit(2)
    setup_logging(settings)
    args = _parser(settings).parse_args(args_list)
    signal.signal(signal.SIGTERM, _raise_shutdown)
    try:
        if args.command == "serve":
            code = serve(settings, args.host, args.port)
        elif args.command == "migrate":
            code = run_migrate(settings)
        elif args.command == "token":
            code = token(settings, args.user, args.ttl)
        else:
            code = fake_upstream(args.host, args.port)
    except (Shutdown, KeyboardInterrupt):
        code = 0
    except Exception as exc:
        from app.devtools.processes import EmbeddedServiceError

        if not isinstance(exc, EmbeddedServiceError):
            raise
        log.error("%s", exc)
        code = 1
    sys.exit(code)
