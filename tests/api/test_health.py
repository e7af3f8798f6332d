"""Liveness, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from app.config import DatabaseSettings, RedisSettings, Settings
from app.main import create_app
from tests.serving import free_port


async def _get(app: FastAPI, path: str) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get(path)


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


async def test_every_route_is_described_in_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 14
    for path, method, op in operations:
        assert op.get("description") or op.get("summary"), f"{method.upper()} {path}"
    docs = await client.get("/docs")
    assert docs.status_code == 200
