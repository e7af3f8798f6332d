"""One error shape for every failure before a stream starts: `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisClusterException, RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas import ErrorOut
from app.api.text import clean_value
from app.errors import AppError

log = logging.getLogger(__name__)


_MEANINGS = {
    400: "the request could not be read",
    401: "missing or invalid credentials",
    404: "no such session (or not the caller's)",
    409: "conflicts with the session's state",
    413: "a body, message or attachment above its configured limit",
    422: "a malformed body, parameter or field (named in `fields`)",
    429: "a limit was reached; try again after `Retry-After` seconds",
    503: "a dependency (database, Redis) is unreachable, or the replica is draining "
    "(`Retry-After`); nothing was done",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of error statuses, each with the error envelope."""
    return {
        status: {"model": ErrorOut, "description": _MEANINGS.get(status, "error")}
        for status in statuses
    }


def envelope_every_error(app: FastAPI) -> None:
    """Declare the error envelope on every 4xx/5xx response a route lists without content
    (e.g. `409: {"description": ...}`), so the schema says what those answers hold."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    if str(status)[0] in "45" and "content" not in response:
                        response["content"] = envelope
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_response(
    status: int,
    code: str,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error envelope."""
    body: dict[str, Any] = {"code": code, "message": message}
    if extra:
        body.update(extra)
    # A message may quote the client's input (a field name), which may hold a lone surrogate.
    body = clean_value(body)
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc if part not in ("body",)) or "body"


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status, exc.code, exc.message, exc.extra, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error") or "malformed"
            return error_response(422, "invalid_json", f"the body is not valid JSON: {reason}")
    fields = [
        {"field": _field(err.get("loc", ())), "message": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return error_response(422, "validation_error", message, {"fields": fields})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _dependency_down(_: Request, exc: Exception) -> JSONResponse:
    name = "redis" if isinstance(exc, RedisError | RedisClusterException) else "database"
    log.warning("%s unavailable: %s", name, exc)
    return error_response(
        503,
        "dependency_unavailable",
        f"the {name} is unreachable right now; nothing was stored, try again shortly",
        {"down": [name]},
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "an unexpected error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    """Render every error in the envelope."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    dependency_errors = (
        RedisError,
        RedisClusterException,  # redis-py's Cluster client: no node answers (not a RedisError)
        OperationalError,
        InterfaceError,
        PoolTimeout,
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.InterfaceError,
    )
    for dependency_error in dependency_errors:
        app.add_exception_handler(dependency_error, _dependency_down)
    app.add_exception_handler(Exception, _unexpected)
