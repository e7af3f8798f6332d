"""The outermost layer: every request gets an id, and its log lines carry it.

Pure ASGI, like `headers.py`: a send costs one `await` and a type check. The id is the
`X-Request-ID` a proxy sent when it is a plain token (letters, digits, `.`, `_`, `:`, `-`, at
most 128), else a new one; the response names it in `x-request-id`. A session id in the path
(`/sessions/{id}...`, `/chat/{id}/...`) is bound too; the user is bound by the auth
dependency, a `POST /chat` body's session by its route (`app/observability/log_context.py`).
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.log_context import bind, reset

HEADER = b"x-request-id"
_GIVEN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_SESSION_IN_PATH = re.compile(r"^/api/v1/(?:sessions|chat)/([A-Za-z0-9_-]{1,128})(?:/|$)")


def request_id(scope: Scope) -> str:
    """The id a proxy gave the request, if it is a plain token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == HEADER and _GIVEN.fullmatch(value):
            return str(value.decode())
    return uuid.uuid4().hex


class RequestIds:
    """Binds the request's id (and the session in its path) for its log lines."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        found = _SESSION_IN_PATH.match(scope.get("path", ""))
        token = bind(request_id=rid, session_id=found.group(1) if found else None)
        header = (HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset(token)
