"""Anthropic-shaped error responses: status, `error.type`, message and retry headers."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    402: "Your credit balance is too low to access the Anthropic API.",
    403: "Your API key does not have permission to use the specified resource.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed the rate limit for your organization. "
    "Please wait before trying again.",
    500: "Internal server error",
    529: "Overloaded",
}

# Statuses a client should retry: what the real API marks with `x-should-retry: true`.
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class ApiError:
    """An error answer before (or in place of) a stream."""

    status: int
    error_type: str
    message: str
    retry_after: float | None = None

    def body(self, request_id: str) -> bytes:
        """Return the JSON body `{"type": "error", "error": {...}, "request_id": ...}`."""
        return orjson.dumps(
            {
                "type": "error",
                "error": {"type": self.error_type, "message": self.message},
                "request_id": request_id,
            }
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Return the retry headers that go with this status."""
        retry = b"true" if self.status in _RETRYABLE else b"false"
        out = [(b"x-should-retry", retry)]
        if self.retry_after is not None:
            value = self.retry_after
            text = str(int(value)) if value == int(value) else str(value)
            out.append((b"retry-after", text.encode()))
        return out


def api_error(
    status: int,
    *,
    message: str | None = None,
    error_type: str | None = None,
    retry_after: float | None = None,
    model: str = "",
) -> ApiError:
    """Build the error Anthropic returns for `status` (429 gets `retry-after: 1` by default)."""
    if message is None:
        message = f"model: {model}" if status == 404 else _DEFAULT_MESSAGES.get(status, "Error")
    if error_type is None:
        error_type = ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
    if retry_after is None and status == 429:
        retry_after = 1.0
    return ApiError(status, error_type, message, retry_after)


def prompt_too_long(tokens: int, maximum: int) -> ApiError:
    """Build the 400 the real API answers when the prompt exceeds the context window."""
    return ApiError(
        400, "invalid_request_error", f"prompt is too long: {tokens} tokens > {maximum} maximum"
    )
