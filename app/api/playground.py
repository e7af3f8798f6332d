"""The playground page at `/` and `/playground`: static files built from `playground/`.

The files are `app/static/playground/` (committed; `npm ci && npm run build` in `playground/`
writes them, and `tests/playground/test_build.py` fails when they and the sources disagree).
They are read once when the app is built and answered from memory: a few hundred KiB, and no
file system access per request.

- `index.html` carries the page's own Content-Security-Policy (scripts, styles and requests
  from this origin only, no inline code, no framing) and `no-cache` with an ETag: a new build
  shows on the next load. The security headers middleware keeps a CSP a response set itself.
- Assets have content-hashed names, so they are `immutable` for a year.
- The page uses the public API with the user's own credentials; it holds no data itself and
  so needs no auth. `COPILOT_PLAYGROUND=0` removes these routes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from app.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parents[1] / "static" / "playground"

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the build, in memory."""

    body: bytes
    content_type: str
    etag: str


def _read(path: Path, content_type: str) -> StaticFile:
    body = path.read_bytes()
    return StaticFile(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def playground_router(static_dir: Path = STATIC_DIR) -> APIRouter:
    """Routes for the page and its assets, read from `static_dir` now."""
    index = _read(static_dir / "index.html", "text/html; charset=utf-8")
    assets = {
        path.name: _read(path, ASSET_TYPES[path.suffix])
        for path in sorted((static_dir / "assets").iterdir())
        if path.suffix in ASSET_TYPES
    }
    router = APIRouter(include_in_schema=False)

    async def page(request: Request) -> Response:
        """The playground page."""
        headers = {
            "content-security-policy": PAGE_CSP,
            "cache-control": "no-cache",
            "etag": index.etag,
        }
        if request.headers.get("if-none-match") == index.etag:
            return Response(status_code=304, headers=headers)
        return Response(index.body, media_type=index.content_type, headers=headers)

    for path in ("/", "/playground", "/playground/"):
        router.add_api_route(path, page, methods=["GET", "HEAD"])

    @router.api_route("/playground/assets/{name}", methods=["GET", "HEAD"])
    async def asset(name: str) -> Response:
        """A content-hashed script or stylesheet of the page."""
        found = assets.get(name)
        if found is None:
            raise NotFound(f"no playground asset {name!r}", code="asset_not_found")
        headers = {"cache-control": IMMUTABLE, "etag": found.etag}
        return Response(found.body, media_type=found.content_type, headers=headers)

    return router
