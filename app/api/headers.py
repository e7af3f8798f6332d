"""The outermost layers of the app: security headers on every response, and CORS.

`SecurityHeaders` is pure ASGI on purpose: Starlette's `BaseHTTPMiddleware` runs every
response through a memory stream and a task group, which breaks the SSE response's disconnect
handling and costs CPU per chunk. Here a send costs one extra `await` and a type check; headers
are added once, to `http.response.start`, and never replace one the response set itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Nothing of an API response is a document to render, embed or run scripts from. HTML pages
# (the Swagger UI at /docs loads its script from a CDN) keep their own policy.
API_CSP = b"default-src 'none'; frame-ancestors 'none'"

# What the AI SDK's transports and our auth send, and what a browser client may read.
CORS_HEADERS = ("content-type", "authorization", "x-api-key", "last-event-id")
CORS_EXPOSED = ("x-vercel-ai-ui-message-stream", "retry-after", "www-authenticate")
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class SecurityHeaders:
    """Adds nosniff, no-referrer, DENY framing, a CSP for non-HTML and (if set) HSTS."""

    def __init__(self, app: ASGIApp, hsts_max_age_s: int = 0) -> None:
        self.app = app
        self.always: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
        ]
        if hsts_max_age_s:
            self.always.append((b"strict-transport-security", b"max-age=%d" % hsts_max_age_s))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self.added_to(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def added_to(self, headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`headers` plus every security header the response did not set itself."""
        present = {name.lower() for name, _ in headers}
        out = list(headers)
        out.extend(header for header in self.always if header[0] not in present)
        if b"content-security-policy" not in present:
            html = any(
                name.lower() == b"content-type" and value.startswith(b"text/html")
                for name, value in headers
            )
            if not html:
                out.append((b"content-security-policy", API_CSP))
        return out


def edge(app: ASGIApp, cors_origins: Sequence[str], hsts_max_age_s: int) -> ASGIApp:
    """`app` wrapped in CORS (only when origins are configured) and the security headers."""
    if cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=list(cors_origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
    return SecurityHeaders(app, hsts_max_age_s)
