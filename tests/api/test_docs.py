"""Who may read /openapi.json, /docs and /redoc (`COPILOT_DOCS`)."""

from __future__ import annotations

from typing import Literal

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import AuthSettings, Settings
from app.main import create_app
from tests.conftest import JWT_SECRET, bearer

DOCS = ["/openapi.json", "/docs", "/redoc"]
API_KEY = "docs-reader-key-0123456789"


async def _get_all(app: FastAPI, headers: dict[str, str] | None = None) -> list[int]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return [(await http.get(path, headers=headers)).status_code for path in DOCS]


def _app(
    settings: Settings, docs: Literal["public", "auth", "off"] | None, **auth: object
) -> FastAPI:
    group = AuthSettings(docs=docs, **auth)  # type: ignore[arg-type]
    return create_app(settings.model_copy(update={"auth": group}))


async def test_docs_are_public_in_local_mode(settings: Settings) -> None:
    assert await _get_all(_app(settings, None)) == [200, 200, 200]


async def test_docs_need_credentials_when_auth_is_configured(settings: Settings) -> None:
    app = _app(settings, None, jwt_secret=SecretStr(JWT_SECRET))
    assert await _get_all(app) == [401, 401, 401]
    assert await _get_all(app, bearer(settings, "alice")) == [200, 200, 200]


async def test_an_api_key_may_read_the_openapi_schema(settings: Settings) -> None:
    app = _app(settings, "auth", api_keys=SecretStr(f"fuzzer={API_KEY}"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            spec = await http.get("/openapi.json", headers={"X-API-Key": API_KEY})
    assert spec.status_code == 200
    assert "/api/v1/chat" in spec.json()["paths"]
    assert "/openapi.json" not in spec.json()["paths"]


async def test_docs_can_be_made_public_with_auth_configured(settings: Settings) -> None:
    app = _app(settings, "public", jwt_secret=SecretStr(JWT_SECRET))
    assert await _get_all(app) == [200, 200, 200]


async def test_docs_off_are_not_found_even_for_callers(settings: Settings) -> None:
    app = _app(settings, "off", jwt_secret=SecretStr(JWT_SECRET))
    assert await _get_all(app, bearer(settings, "alice")) == [404, 404, 404]


@pytest.mark.parametrize("docs", ["public", "auth", "off"])
async def test_the_api_routes_work_whatever_the_docs_setting(
    settings: Settings, docs: Literal["public", "auth", "off"]
) -> None:
    app = _app(settings, docs, jwt_secret=SecretStr(JWT_SECRET))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/api/v1/sessions", headers=bearer(settings, "alice"))
    assert response.status_code == 200
