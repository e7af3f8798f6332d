"""The playground page and its assets: CSP, content types, caching, and the routes it leaves."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from app.api.playground import PAGE_CSP
from app.config import ServerSettings, Settings
from app.main import create_app


def _client(app: FastAPI) -> httpx.AsyncClient:
    # No lifespan: the page is static and needs none of the services.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/playground/assets/[^"]+)"', html)


async def test_the_page_is_served_with_its_strict_csp_at_root_and_playground() -> None:
    async with _client(create_app(Settings())) as http:
        for path in ("/", "/playground", "/playground/"):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.headers["content-security-policy"] == PAGE_CSP
            assert page.headers["cache-control"] == "no-cache"
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["x-content-type-options"] == "nosniff"
        # Nothing inline: every script and style comes from this origin's files.
        assert "<style" not in page.text
        assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None
        assert " style=" not in page.text
        again = await http.get("/", headers={"if-none-match": page.headers["etag"]})
        assert again.status_code == 304


async def test_assets_have_their_types_and_a_long_cache() -> None:
    async with _client(create_app(Settings())) as http:
        assets = _assets((await http.get("/")).text)
        assert sorted(a.rsplit(".", 1)[1] for a in assets) == ["css", "js"]
        for path in assets:
            answer = await http.get(path)
            assert answer.status_code == 200
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            assert answer.headers["content-type"] == f"{kind}; charset=utf-8"
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        missing = await http.get("/playground/assets/app-NOPE.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "asset_not_found"


async def test_the_page_shadows_no_other_route() -> None:
    async with _client(create_app(Settings())) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        docs = await http.get("/docs")
        assert docs.status_code == 200
        # Swagger UI keeps its own page (its script comes from a CDN): not the playground's CSP.
        assert docs.headers.get("content-security-policy") != PAGE_CSP
        assert (await http.get("/openapi.json")).headers["content-type"] == "application/json"
        assert (await http.get("/api/v1/nope")).status_code == 404


async def test_copilot_playground_0_removes_the_page() -> None:
    app = create_app(Settings(server=ServerSettings(playground=False)))
    async with _client(app) as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/playground")).status_code == 404
