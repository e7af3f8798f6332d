"""Builds the FastAPI application."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from app.api import chat, health, sessions
from app.api.errors import envelope_every_error, error_responses, install_error_handlers
from app.api.limits import BodyLimit
from app.config import Settings
from app.lifespan import lifespan_for

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for `settings` (read from the environment when omitted)."""
    settings = settings or Settings()
    app = FastAPI(
        title="copilot-server",
        version="0.1.0",
        summary="Chat with an agent over Server-Sent Events (AI SDK UI message stream v1).",
        lifespan=lifespan_for(settings),
    )
    install_error_handlers(app)
    envelope_every_error(app)
    api = APIRouter(prefix=API_PREFIX, responses=error_responses(400, 401, 413, 422, 503))
    api.include_router(sessions.router)
    api.include_router(chat.router)
    api.include_router(health.router)
    app.include_router(api)
    app.include_router(health.router)
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes)
    return app
