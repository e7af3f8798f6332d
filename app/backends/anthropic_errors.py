"""How failures of the Messages API (an error status, from `anthropic_http` or the SDK; the
transports' errors; an `event: error` in the stream) map onto the shared taxonomy."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import anthropic
import httpx2

from app.backends.anthropic_http import StatusError
from app.backends.errors import STREAM_ERROR_CODES, UpstreamError, code_for_status, retry_after


def stream_error(body: object) -> UpstreamError:
    """The error of an `event: error` inside a 200 stream (e.g. overloaded mid-stream): the
    status says nothing, the error type in the body is what counts."""
    error = body.get("error") if isinstance(body, dict) else None
    kind = str(error.get("type", "")) if isinstance(error, dict) else ""
    text = error.get("message") if isinstance(error, dict) else None
    message = text if isinstance(text, str) else f"the model's stream failed ({kind})"
    if kind == "invalid_request_error" and "prompt is too long" in message.lower():
        return UpstreamError("prompt_too_long", message)
    return UpstreamError(STREAM_ERROR_CODES.get(kind, "upstream_unavailable"), message)


def classify(exc: BaseException) -> UpstreamError:
    """Map an exception raised while talking to the Messages API onto the taxonomy."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, StatusError) and exc.status >= 400:
        return _status_error(exc.status, _error_message(exc.body, str(exc)), exc.headers)
    if isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 400:
        message = _error_message(exc.body, str(exc.message))
        return _status_error(exc.status_code, message, exc.response.headers)
    if isinstance(
        exc,
        anthropic.APIConnectionError
        | httpx2.TransportError
        | httpx2.StreamError
        | aiohttp.ClientError,  # what the aiohttp transport does not map to httpx's errors
    ):
        return UpstreamError("upstream_unavailable", f"connection to the model failed: {exc}")
    return UpstreamError("internal", f"{type(exc).__name__}: {exc}")


def _status_error(status: int, message: str, headers: Mapping[str, str]) -> UpstreamError:
    return UpstreamError(
        code_for_status(status, message),
        message,
        status=status,
        retry_after_s=retry_after(headers, status),
    )


def _error_message(body: object, default: str) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return default
