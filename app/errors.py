"""The one error base class: a stable code, a message a person can act on, and an HTTP status."""

from __future__ import annotations


class AppError(Exception):
    """A business error rendered as `{"error": {"code", "message"}}` with its status."""

    code = "error"
    status = 400
    # Response headers the answer carries (`Retry-After`), and extra fields of its body.
    headers: dict[str, str] | None = None
    extra: dict[str, object] | None = None

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class NotFound(AppError):
    code = "not_found"
    status = 404


class Conflict(AppError):
    code = "conflict"
    status = 409


class Unauthorized(AppError):
    code = "unauthorized"
    status = 401


class PayloadTooLarge(AppError):
    code = "payload_too_large"
    status = 413


class InvalidInput(AppError):
    code = "invalid_input"
    status = 422


class ServiceUnavailable(AppError):
    code = "unavailable"
    status = 503


class TooManyRequests(AppError):
    """Refused for now; `retry_after_s` becomes the `Retry-After` header."""

    code = "too_many_requests"
    status = 429

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}


class Draining(ServiceUnavailable):
    """This replica is stopping: new turns go to another one (`Retry-After` says when)."""

    code = "draining"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}
        self.extra = {"retry_after_s": retry_after_s}
