"""One taxonomy of upstream failures, shared by every backend; each backend maps its own
failures onto it (`Backend.classify`)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Literal

ErrorCode = Literal[
    "rate_limited",
    "overloaded",
    "upstream_unavailable",
    "auth_failed",
    "billing",
    "invalid_request",
    "prompt_too_long",
    "context_exhausted",
    "max_output_tokens",
    "tool_loop_limit",
    "agent_stalled",
    "interrupted",
    "internal",
]

STREAM_ERROR_CODES: dict[str, ErrorCode] = {
    "overloaded_error": "overloaded",
    "rate_limit_error": "rate_limited",
    "api_error": "upstream_unavailable",
    "invalid_request_error": "invalid_request",
    "authentication_error": "auth_failed",
    "permission_error": "auth_failed",
    "billing_error": "billing",
    "not_found_error": "invalid_request",
    "request_too_large": "prompt_too_long",
}

RETRYABLE: frozenset[str] = frozenset(
    {"rate_limited", "overloaded", "upstream_unavailable", "interrupted"}
)

MESSAGES: dict[str, str] = {
    "rate_limited": "The model provider is rate limiting requests; try again shortly.",
    "overloaded": "The model provider is overloaded; try again shortly.",
    "upstream_unavailable": "The model provider could not be reached; try again shortly.",
    "auth_failed": "The server's model credentials were rejected; contact the operator.",
    "billing": "The model provider refused the request for billing reasons.",
    "invalid_request": "The model provider rejected the request.",
    "prompt_too_long": "The conversation is too long for the model's context window.",
    "context_exhausted": (
        "This message alone is too long for the model's context window: shorten it, or start a"
        " new chat."
    ),
    "max_output_tokens": "The reply reached the maximum output length.",
    "tool_loop_limit": "The agent used too many tool rounds and was stopped.",
    "agent_stalled": "The agent stopped making progress and was stopped.",
    "interrupted": "The server stopped in the middle of this reply; send the message again.",
    "internal": "An internal error ended the reply.",
}


class UpstreamError(Exception):
    """An upstream failure, classified."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail or MESSAGES[code])
        self.code: ErrorCode = code
        self.detail = detail or MESSAGES[code]
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """Whether trying again may succeed."""
        return self.code in RETRYABLE

    @property
    def public_message(self) -> str:
        """A message safe to show an end user."""
        return MESSAGES[self.code]


def retry_after(headers: Mapping[str, str], status: int = 429) -> float | None:
    """Seconds to wait from `retry-after(-ms)`, or (429 only) Anthropic's rate-limit resets."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None  # neither seconds nor an HTTP-date: no advice
            return max(0.0, parsed.timestamp() - time.time())
    if status != 429:
        return None
    resets = [
        v
        for k, v in headers.items()
        if k.startswith("anthropic-ratelimit-") and k.endswith("-reset")
    ]
    waits: list[float] = []
    for stamp in resets:
        try:
            from datetime import datetime

            waits.append(
                datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - time.time()
            )
        except ValueError:
            continue
    return max(0.0, min(waits)) if waits else None


def code_for_status(status: int, message: str) -> ErrorCode:
    """The taxonomy code of an HTTP error status of the Messages API (and its message)."""
    lowered = message.lower()
    if status == 400 and "prompt is too long" in lowered:
        return "prompt_too_long"
    if status == 400 and ("credit balance" in lowered or "billing" in lowered):
        return "billing"
    if status == 401:
        return "auth_failed"
    if status == 402:
        return "billing"
    if status == 403:
        return "billing" if "billing" in lowered or "credit" in lowered else "auth_failed"
    if status == 413:
        return "prompt_too_long"
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status >= 500:
        return "upstream_unavailable"
    return "invalid_request"
