"""The API description for authenticated callers only (`COPILOT_DOCS=auth`).

With `public` FastAPI serves /openapi.json, /docs and /redoc itself; with `auth` these routes
serve the same documents behind the API's own credentials (JWT or API key), so a client that
may call the API (a fuzzer, a code generator) may read its schema and nobody else may. A
browser opening /docs sends no credentials: operators who want the pages in a browser set
`COPILOT_DOCS=public`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app.api.deps import CurrentUser

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request, _: CurrentUser) -> JSONResponse:
    """The OpenAPI schema."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request, _: CurrentUser) -> HTMLResponse:
    """Swagger UI."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} - Docs")


@router.get("/redoc")
async def redoc(request: Request, _: CurrentUser) -> HTMLResponse:
    """ReDoc."""
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - ReDoc")
