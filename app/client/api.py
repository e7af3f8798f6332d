"""The few calls of the public HTTP API that the terminal client makes, over httpx.

Credentials: a bearer token (`Authorization: Bearer <JWT>`) or an API key (`X-API-Key`);
neither when the server runs in local single-user mode. Errors come back as the API's one
envelope, `{"error": {"code", "message"}}`, and become `ApiError`.
"""

from __future__ import annotations

from typing import Any

import httpx

API_PREFIX = "/api/v1"
# Reads wait for the next chunk: the server sends `: ping` after COPILOT_HEARTBEAT_S (10 s by
# default) of silence, so a minute without a byte means the connection is gone.
TIMEOUT = httpx.Timeout(10.0, read=60.0)


class ApiError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message


def _error(response: httpx.Response) -> ApiError:
    try:
        detail = response.json()["error"]
        return ApiError(response.status_code, str(detail["code"]), str(detail["message"]))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ApiError(response.status_code, "http_error", text)


def api_headers(token: str | None, api_key: str | None) -> dict[str, str]:
    """The credential headers for a token or an API key."""
    headers = {"user-agent": "copilot-chat"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if api_key:
        headers["x-api-key"] = api_key
    return headers


class CopilotAPI:
    """A synchronous client of `/api/v1` on one server."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = url.rstrip("/")
        self.base_url = base if base.endswith(API_PREFIX) else base + API_PREFIX
        self.headers = api_headers(token, api_key)
        self._transport = transport
        self.http = self._client()

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=TIMEOUT, transport=self._transport
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _stream(self, request: httpx.Request) -> httpx.Response:
        response = self.http.send(request, stream=True)
        if response.status_code >= 400:
            response.read()
            response.close()
            raise _error(response)
        return response

    def start_turn(
        self,
        session_id: str,
        message: str | None = None,
        *,
        regenerate: bool = False,
        on_conflict: str | None = None,
    ) -> httpx.Response:
        """`POST /chat`: the open streaming response of a new turn (or of a regenerated reply)."""
        body: dict[str, Any] = {"id": session_id}
        if regenerate:
            body["trigger"] = "regenerate-message"
        else:
            body["message"] = message
        if on_conflict:
            body["on_conflict"] = on_conflict
        return self._stream(self.http.build_request("POST", "/chat", json=body))

    def resume(self, session_id: str, last_event_id: int | None) -> httpx.Response | None:
        """`GET /chat/{id}/stream` after `last_event_id`: the open response; None: no turn runs."""
        headers = {} if last_event_id is None else {"last-event-id": str(last_event_id)}
        request = self.http.build_request("GET", f"/chat/{session_id}/stream", headers=headers)
        response = self._stream(request)
        if response.status_code == 204:
            response.close()
            return None
        return response

    def stop(self, session_id: str) -> bool:
        """`POST /chat/{id}/stop`: True when a turn was stopped, False when none ran.

        Its own connection pool: it is sent from another thread while a stream is read."""
        with self._client() as http:
            response = http.post(f"/chat/{session_id}/stop", timeout=30)
        if response.status_code >= 400:
            raise _error(response)
        return response.status_code == 202

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    def sessions(self, cursor: str | None = None, limit: int = 20) -> dict[str, Any]:
        """`GET /sessions`: one page, newest first, with `next_cursor`."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return dict(self._json("GET", "/sessions", params=params))

    def session(self, session_id: str) -> dict[str, Any]:
        """`GET /sessions/{id}`: status, active turn, usage."""
        return dict(self._json("GET", f"/sessions/{session_id}"))

    def messages(self, session_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """`GET /sessions/{id}/messages`: the newest page of the history, oldest first."""
        page = self._json("GET", f"/sessions/{session_id}/messages", params={"limit": limit})
        return list(page["messages"])
