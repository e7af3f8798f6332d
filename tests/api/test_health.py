"""Liveness, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.config import DatabaseSettings, RedisSettings, Settings
from app.main import create_app
from tests.conftest import bearer
from tests.serving import free_port

METRICS_TOKEN = "a-metrics-token-0123456789"


async def _get(app: FastAPI, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get(path, headers=headers)


async def test_healthz_and_readyz_answer_when_all_is_up(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    assert (await client.get("/api/v1/readyz")).status_code == 200


async def test_readyz_names_redis_when_it_is_down(settings: Settings) -> None:
    dead = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    response = await _get(create_app(settings.model_copy(update={"redis": dead})), "/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["down"] == ["redis"]
    assert "redis" in response.json()["error"]["message"]


async def test_readyz_names_the_database_when_it_is_down(settings: Settings) -> None:
    dead = DatabaseSettings(url=f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    response = await _get(create_app(settings.model_copy(update={"database": dead})), "/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["down"] == ["database"]


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "process_resident_memory_bytes" in response.text
    assert "copilot_turns_active" in response.text


async def test_every_route_is_described_in_openapi(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    spec = (await client.get("/openapi.json", headers=bearer(settings, "alice"))).json()
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 14
    for path, method, op in operations:
        assert op.get("description") or op.get("summary"), f"{method.upper()} {path}"
    docs = await client.get("/docs", headers=bearer(settings, "alice"))
    assert docs.status_code == 200


def _with_metrics_token(settings: Settings) -> FastAPI:
    auth = settings.auth.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    return create_app(settings.model_copy(update={"auth": auth}))


@pytest.mark.parametrize("path", ["/metrics", "/api/v1/metrics"])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token-0123456789", f"Basic {METRICS_TOKEN}"]
)
async def test_metrics_need_the_metrics_token_when_it_is_set(
    settings: Settings, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else None
    response = await _get(_with_metrics_token(settings), path, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_metrics_token"


async def test_metrics_answer_the_metrics_token(settings: Settings) -> None:
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    response = await _get(_with_metrics_token(settings), "/metrics", headers)
    assert response.status_code == 200
    assert "copilot_turns_active" in response.text


async def test_a_user_token_is_not_a_metrics_token(settings: Settings) -> None:
    response = await _get(_with_metrics_token(settings), "/metrics", bearer(settings, "alice"))
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_stay_open_when_metrics_are_protected(settings: Settings, path: str) -> None:
    assert (await _get(_with_metrics_token(settings), path)).status_code == 200
