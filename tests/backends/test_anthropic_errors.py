"""Failures of the Messages API (SDK errors, transport errors, `event: error` in a stream)
map onto the shared taxonomy; `code_for_status` and `retry_after` are the rules underneath."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest

from app.backends.anthropic_errors import classify, stream_error
from app.backends.errors import MESSAGES, UpstreamError, code_for_status, retry_after

REQUEST = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")


def _body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _status_error(
    cls: type[anthropic.APIStatusError],
    status: int,
    kind: str = "api_error",
    message: str = "failed",
    headers: dict[str, str] | None = None,
) -> anthropic.APIStatusError:
    """An SDK status error built as the SDK builds one from a JSON error response."""
    body = _body(kind, message)
    response = httpx2.Response(status, json=body, headers=headers or {}, request=REQUEST)
    return cls(f"Error code: {status} - {body}", response=response, body=body)


def _rate_limited(headers: dict[str, str]) -> anthropic.APIStatusError:
    return _status_error(anthropic.RateLimitError, 429, "rate_limit_error", "slow", headers)


def _in(seconds: float) -> str:
    """An RFC 3339 UTC time `seconds` from now, as Anthropic's rate-limit headers give it."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


# -- classify: HTTP statuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "status", "kind", "message", "code"),
    [
        (
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            "prompt_too_long",
        ),
        (
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
            "billing",
        ),
        (
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "messages: roles must alternate",
            "invalid_request",
        ),
        (
            anthropic.AuthenticationError,
            401,
            "authentication_error",
            "invalid x-api-key",
            "auth_failed",
        ),
        (anthropic.PaymentRequiredError, 402, "billing_error", "payment required", "billing"),
        (
            anthropic.PermissionDeniedError,
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
            "auth_failed",
        ),
        (
            anthropic.PermissionDeniedError,
            403,
            "permission_error",
            "This organization has been disabled for billing reasons.",
            "billing",
        ),
        (anthropic.NotFoundError, 404, "not_found_error", "model: claude-nope", "invalid_request"),
        (
            anthropic.ContentTooLargeError,
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
            "prompt_too_long",
        ),
        (anthropic.RateLimitError, 429, "rate_limit_error", "slow down", "rate_limited"),
        (
            anthropic.InternalServerError,
            500,
            "api_error",
            "Internal server error",
            "upstream_unavailable",
        ),
        (
            anthropic.ServiceUnavailableError,
            503,
            "api_error",
            "unavailable",
            "upstream_unavailable",
        ),
        (anthropic.OverloadedError, 529, "overloaded_error", "Overloaded", "overloaded"),
    ],
    ids=[
        "400-prompt-too-long",
        "400-credit-balance",
        "400-invalid",
        "401",
        "402",
        "403-permission",
        "403-billing",
        "404-model",
        "413",
        "429",
        "500",
        "503",
        "529",
    ],
)
def test_a_status_error_gets_the_code_of_its_status_and_message(
    cls: type[anthropic.APIStatusError], status: int, kind: str, message: str, code: str
) -> None:
    error = classify(_status_error(cls, status, kind, message))
    assert (error.code, error.status) == (code, status)


def test_the_message_of_the_error_body_becomes_the_detail() -> None:
    error = classify(_status_error(anthropic.NotFoundError, 404, "not_found_error", "no model"))
    assert error.detail == "no model"


def test_a_status_error_without_a_json_body_is_classified_by_its_status() -> None:
    response = httpx2.Response(502, text="<html>Bad Gateway</html>", request=REQUEST)
    exc = anthropic.InternalServerError(
        "<html>Bad Gateway</html>", response=response, body="<html>Bad Gateway</html>"
    )
    error = classify(exc)
    assert (error.code, error.detail) == ("upstream_unavailable", "<html>Bad Gateway</html>")


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (402, False), (403, False), (404, False), (413, False)]
    + [(429, True), (500, True), (503, True), (529, True)],
)
def test_only_rate_limits_overloads_and_server_errors_are_retryable(
    status: int, retryable: bool
) -> None:
    exc = _status_error(anthropic.APIStatusError, status)
    assert classify(exc).retryable is retryable


# -- classify: retry-after ---------------------------------------------------------------------


def test_a_rate_limit_carries_retry_after_in_seconds() -> None:
    assert classify(_rate_limited({"retry-after": "7"})).retry_after_s == 7.0


def test_a_rate_limit_carries_retry_after_ms() -> None:
    assert classify(_rate_limited({"retry-after-ms": "1500"})).retry_after_s == 1.5


def test_retry_after_ms_wins_over_retry_after() -> None:
    headers = {"retry-after-ms": "250", "retry-after": "9"}
    assert classify(_rate_limited(headers)).retry_after_s == 0.25


def test_a_retry_after_http_date_is_the_time_until_then() -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    wait = classify(_rate_limited({"retry-after": when})).retry_after_s
    assert wait is not None
    assert 28.0 <= wait <= 30.0


def test_a_retry_after_http_date_in_the_past_is_no_wait() -> None:
    when = email.utils.format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert classify(_rate_limited({"retry-after": when})).retry_after_s == 0.0


def test_a_rate_limit_reset_header_gives_the_wait() -> None:
    wait = classify(_rate_limited({"anthropic-ratelimit-tokens-reset": _in(20)})).retry_after_s
    assert wait is not None
    assert 18.0 <= wait <= 20.0


def test_the_earliest_rate_limit_reset_gives_the_wait() -> None:
    headers = {
        "anthropic-ratelimit-requests-reset": _in(40),
        "anthropic-ratelimit-input-tokens-reset": _in(10),
        "anthropic-ratelimit-output-tokens-reset": _in(25),
    }
    wait = classify(_rate_limited(headers)).retry_after_s
    assert wait is not None
    assert 8.0 <= wait <= 10.0


def test_retry_after_wins_over_rate_limit_resets() -> None:
    headers = {"retry-after": "3", "anthropic-ratelimit-tokens-reset": _in(50)}
    assert classify(_rate_limited(headers)).retry_after_s == 3.0


def test_an_unparsable_rate_limit_reset_is_ignored() -> None:
    headers = {
        "anthropic-ratelimit-tokens-reset": "later",
        "anthropic-ratelimit-requests-reset": _in(5),
    }
    wait = classify(_rate_limited(headers)).retry_after_s
    assert wait is not None
    assert 3.0 <= wait <= 5.0


def test_a_rate_limit_without_headers_has_no_retry_after() -> None:
    assert classify(_rate_limited({})).retry_after_s is None


def test_an_overload_honours_retry_after() -> None:
    exc = _status_error(anthropic.OverloadedError, 529, "overloaded_error", "Overloaded")
    exc.response.headers["retry-after"] = "4"
    assert classify(exc).retry_after_s == 4.0


def test_rate_limit_resets_are_read_for_429_only() -> None:
    exc = _status_error(
        anthropic.InternalServerError,
        500,
        headers={"anthropic-ratelimit-tokens-reset": _in(30)},
    )
    assert classify(exc).retry_after_s is None


def test_an_unparsable_retry_after_is_ignored() -> None:
    error = classify(_rate_limited({"retry-after": "soon"}))
    assert (error.code, error.retry_after_s) == ("rate_limited", None)


# -- classify: connections and the rest --------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        anthropic.APIConnectionError(request=REQUEST),
        anthropic.APITimeoutError(request=REQUEST),
        httpx2.ConnectError("connection refused", request=REQUEST),
        httpx2.ReadTimeout("timed out", request=REQUEST),
        httpx2.RemoteProtocolError("peer closed connection", request=REQUEST),
        aiohttp.ClientConnectionError("connection reset"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("response payload is not completed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_connection_failure_is_upstream_unavailable(exc: Exception) -> None:
    error = classify(exc)
    assert (error.code, error.retryable, error.status) == ("upstream_unavailable", True, None)


def test_an_unknown_exception_is_internal() -> None:
    error = classify(KeyError("index"))
    assert (error.code, error.retryable) == ("internal", False)


def test_an_internal_error_names_the_exception_in_its_detail_only() -> None:
    error = classify(RuntimeError("secret path /srv/x"))
    assert error.detail == "RuntimeError: secret path /srv/x"
    assert error.public_message == MESSAGES["internal"]


def test_an_upstream_error_is_passed_through_unchanged() -> None:
    original = UpstreamError("overloaded", "busy", retry_after_s=2.0)
    assert classify(original) is original


# -- stream_error: `event: error` inside a 200 stream ------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("overloaded_error", "overloaded"),
        ("rate_limit_error", "rate_limited"),
        ("api_error", "upstream_unavailable"),
        ("timeout_error", "upstream_unavailable"),
        ("invalid_request_error", "invalid_request"),
        ("authentication_error", "auth_failed"),
        ("permission_error", "auth_failed"),
        ("billing_error", "billing"),
        ("not_found_error", "invalid_request"),
        ("request_too_large", "prompt_too_long"),
    ],
)
def test_a_stream_error_gets_the_code_of_its_error_type(kind: str, code: str) -> None:
    assert stream_error(_body(kind, "failed")).code == code


def test_a_prompt_too_long_in_the_stream_is_prompt_too_long() -> None:
    body = _body("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")
    assert stream_error(body).code == "prompt_too_long"


def test_an_unknown_stream_error_type_is_upstream_unavailable() -> None:
    assert stream_error(_body("brand_new_error", "x")).code == "upstream_unavailable"


def test_the_stream_error_message_becomes_the_detail() -> None:
    assert stream_error(_body("overloaded_error", "Overloaded")).detail == "Overloaded"


def test_a_stream_error_without_a_message_names_its_type() -> None:
    error = stream_error({"type": "error", "error": {"type": "api_error"}})
    assert error.detail == "the model's stream failed (api_error)"


@pytest.mark.parametrize(
    "body", [None, "overloaded", [], {"type": "error"}, {"type": "error", "error": "x"}]
)
def test_a_malformed_stream_error_is_upstream_unavailable(body: object) -> None:
    assert stream_error(body).code == "upstream_unavailable"


def test_a_stream_error_has_no_status_and_no_retry_after() -> None:
    error = stream_error(_body("rate_limit_error", "slow"))
    assert (error.status, error.retry_after_s) == (None, None)


# -- code_for_status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        (400, "prompt is too long: 1 tokens > 0 maximum", "prompt_too_long"),
        (400, "Prompt Is Too Long", "prompt_too_long"),
        (400, "Your credit balance is too low", "billing"),
        (400, "billing issue", "billing"),
        (400, "bad request", "invalid_request"),
        (401, "", "auth_failed"),
        (402, "", "billing"),
        (403, "forbidden", "auth_failed"),
        (403, "billing disabled", "billing"),
        (403, "no credit left", "billing"),
        (404, "", "invalid_request"),
        (413, "", "prompt_too_long"),
        (422, "", "invalid_request"),
        (429, "", "rate_limited"),
        (500, "", "upstream_unavailable"),
        (502, "", "upstream_unavailable"),
        (503, "", "upstream_unavailable"),
        (504, "", "upstream_unavailable"),
        (529, "", "overloaded"),
    ],
)
def test_code_for_status(status: int, message: str, code: str) -> None:
    assert code_for_status(status, message) == code


# -- retry_after -------------------------------------------------------------------------------


def test_retry_after_with_no_header_is_none() -> None:
    assert retry_after({}) is None


def test_retry_after_seconds_may_be_fractional() -> None:
    assert retry_after({"retry-after": "1.25"}) == 1.25


def test_a_negative_retry_after_is_no_wait() -> None:
    assert retry_after({"retry-after": "-3"}) == 0.0


def test_an_unparsable_retry_after_ms_falls_back_to_retry_after() -> None:
    assert retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0


def test_retry_after_is_read_for_any_status() -> None:
    assert retry_after({"retry-after": "5"}, status=503) == 5.0


def test_rate_limit_resets_are_ignored_for_other_statuses() -> None:
    assert retry_after({"anthropic-ratelimit-requests-reset": _in(30)}, status=529) is None


def test_a_rate_limit_reset_in_the_past_is_no_wait() -> None:
    assert retry_after({"anthropic-ratelimit-requests-reset": _in(-30)}) == 0.0


def test_rate_limit_resets_that_do_not_parse_give_no_wait() -> None:
    assert retry_after({"anthropic-ratelimit-tokens-reset": "later"}) is None
