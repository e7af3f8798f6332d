"""How failures of the Messages API (the SDK's errors, the transports', an `event: error` in
the stream) map onto the shared taxonomy."""

from __future__ import annotations

import aiohttp
import anthropic
import httpx2

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
    if isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 400:
        message = _error_message(exc)
        code = code_for_status(exc.status_code, message)
        return UpstreamError(
            code,
            message,
            status=exc.status_code,
            retry_after_s=retry_after(exc.response.headers, exc.status_code),
        )
    if isinstance(
        exc,
        anthropic.APIConnectionError
        | httpx2.TransportError
        | httpx2.StreamError
        | aiohttp.ClientError,  # what the aiohttp transport does not map to httpx's errors
    ):
        return UpstreamError("upstream_unavailable", f"connection to the model failed: {exc}")
    return UpstreamError("internal", f"{type(exc).__name__}: {exc}")


def _error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(exc.message)
