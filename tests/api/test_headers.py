"""CORS for configured origins, and the security headers on every kind of response."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.config import Settings
from app.devtools.fake_upstream import FakeUpstreamHandle
from app.main import create_app
from tests.conftest import bearer
from tests.serving import Served, assert_well_formed, serve, stream, upstream_env

ALLOWED = "https://chat.example.com"
OTHER = "https://evil.example.net"
SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secured(response: httpx.Response | httpx.Headers) -> None:
    headers = response if isinstance(response, httpx.Headers) else response.headers
    for name, value in SECURITY.items():
        assert headers.get(name) == value, name
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "strict-transport-security" not in headers


@pytest_asyncio.fixture
async def cors_app(settings: Settings) -> AsyncIterator[FastAPI]:
    server = settings.server.model_copy(update={"cors_origins": [ALLOWED]})
    app = create_app(settings.model_copy(update={"server": server}))
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture
async def cors_client(cors_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=cors_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization, x-api-key, last-event-id",
    }


async def test_preflight_from_an_allowed_origin_is_200_with_cors_headers(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.options("/api/v1/chat", headers=_preflight(ALLOWED))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    for header in ("content-type", "authorization", "x-api-key", "last-event-id"):
        assert header in allowed
    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_from_another_origin_gets_no_allow_origin(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.options("/api/v1/chat", headers=_preflight(OTHER))
    assert response.status_code == 400
    # Without an allow-origin header the browser refuses to send the request.
    assert "access-control-allow-origin" not in response.headers


async def test_a_request_from_an_allowed_origin_may_read_the_answer(
    cors_client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {"Origin": ALLOWED, **bearer(settings, "alice")}
    response = await cors_client.get("/api/v1/sessions", headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "x-vercel-ai-ui-message-stream" in response.headers["access-control-expose-headers"]
    other = await cors_client.get("/api/v1/sessions", headers={**headers, "Origin": OTHER})
    assert "access-control-allow-origin" not in other.headers


async def test_without_configured_origins_there_is_no_cors(client: httpx.AsyncClient) -> None:
    response = await client.options("/api/v1/chat", headers=_preflight(ALLOWED))
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers


async def test_security_headers_are_on_json_responses(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/api/v1/sessions", headers=bearer(settings, "alice"))
    assert response.status_code == 200
    assert_secured(response)
    assert_secured(await client.get("/healthz"))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/api/v1/sessions", 401), ("GET", "/nowhere", 404), ("PUT", "/healthz", 405)],
)
async def test_security_headers_are_on_error_responses(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert_secured(response)


async def test_security_headers_are_on_a_body_refused_by_the_size_limit(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = b"x" * (settings.server.max_body_bytes + 1)
    response = await client.post("/api/v1/sessions", content=body, headers=bearer(settings, "a"))
    assert response.status_code == 413
    assert_secured(response)


async def test_security_headers_and_cors_are_on_an_unexpected_500(
    cors_app: FastAPI, cors_client: httpx.AsyncClient
) -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    cors_app.add_api_route("/boom", boom)
    response = await cors_client.get("/boom", headers={"Origin": ALLOWED})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    assert_secured(response)
    assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_hsts_is_sent_only_when_configured(settings: Settings) -> None:
    server = settings.server.model_copy(update={"hsts_max_age_s": 31536000})
    app = create_app(settings.model_copy(update={"server": server}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/healthz")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


async def test_the_docs_page_keeps_its_own_scripts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/docs", headers=bearer(settings, "alice"))
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in response.headers


@pytest.fixture(scope="module")
def served(
    fake: FakeUpstreamHandle,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """`copilot serve` with one allowed browser origin."""
    env = upstream_env(fake.base_url, database_url, redis_url, COPILOT_CORS_ORIGINS=ALLOWED)
    with serve(env, tmp_path_factory.mktemp("headers")) as server:
        yield server


def test_the_chat_stream_carries_security_and_cors_headers_and_still_streams(
    served: Served,
) -> None:
    body = {"id": f"s-{uuid.uuid4().hex[:12]}", "message": "hi [[fake:text tokens=40 rate=400]]"}
    with served.client() as http:
        result = stream(http, "POST", "/api/v1/chat", json=body, headers={"Origin": ALLOWED})
    assert_well_formed(result)
    assert len(result.text.split()) == 40
    assert result.headers["content-type"].startswith("text/event-stream")
    assert_secured(result.headers)
    assert result.headers["access-control-allow-origin"] == ALLOWED
