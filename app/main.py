"""Builds the FastAPI application."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp

from app.api import chat, docs, health, replicas, sessions
from app.api.errors import envelope_every_error, error_responses, install_error_handlers
from app.api.headers import edge
from app.api.limits import BodyLimit
from app.api.playground import playground_router
from app.api.request_ids import RequestIds
from app.config import Settings
from app.lifespan import lifespan_for

API_PREFIX = "/api/v1"


class CopilotApp(FastAPI):
    """FastAPI with the request id, CORS and the security headers outside even the 500
    handler.

    Middleware added with `add_middleware` runs inside Starlette's ServerErrorMiddleware, so
    a 500 would go out without them (and its log line without the request id); these layers
    wrap the whole stack instead.
    """

    settings: Settings

    def build_middleware_stack(self) -> ASGIApp:
        server = self.settings.server
        stack = edge(super().build_middleware_stack(), server.cors_origins, server.hsts_max_age_s)
        return RequestIds(stack)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings` (read from the environment when omitted)."""
    settings = settings or Settings()
    docs_access = settings.auth.docs_access
    app = CopilotApp(
        title="copilot-server",
        version="0.1.0",
        summary="Chat with an agent over Server-Sent Events (AI SDK UI message stream v1).",
        lifespan=lifespan_for(settings),
        # Not public: no route of FastAPI's own; `auth` mounts app/api/docs.py instead.
        openapi_url="/openapi.json" if docs_access == "public" else None,
    )
    app.settings = settings
    install_error_handlers(app)
    envelope_every_error(app)
    api = APIRouter(prefix=API_PREFIX, responses=error_responses(400, 401, 413, 422, 503))
    api.include_router(sessions.router)
    api.include_router(chat.router)
    api.include_router(health.router)
    api.include_router(replicas.router)
    app.include_router(api)
    app.include_router(health.router)
    if docs_access == "auth":
        app.include_router(docs.router)
    if settings.server.playground:
        app.include_router(playground_router())
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes)
    return app
