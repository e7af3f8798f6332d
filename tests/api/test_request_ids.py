"""Every response names its request id; a proxy's plain id is kept, anything else replaced."""

from __future__ import annotations

import httpx


async def test_every_response_names_a_new_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert len(first.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_plain_request_id_from_a_proxy_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "lb-1234:abc.def_9"})
    assert response.headers["x-request-id"] == "lb-1234:abc.def_9"


async def test_a_request_id_that_is_not_a_plain_token_is_replaced(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": 'x" injected=1'})
    assert response.headers["x-request-id"] != 'x" injected=1'
    assert len(response.headers["x-request-id"]) == 32


async def test_an_error_response_names_its_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/sessions/missing")
    assert response.status_code == 401
    assert response.headers["x-request-id"]
