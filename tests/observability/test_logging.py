"""Log lines: JSON or text, with the ids of the work that wrote them, through one handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from app.config import AuthSettings, ServerSettings, Settings
from app.observability.log_context import bind, current, detached, reset, turn_context
from app.observability.logging import JsonFormatter, TextFormatter, log_handler, wants_json

SECRET = "a-jwt-secret-that-must-not-show"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _settings(log_format: str = "json") -> Settings:
    return Settings(
        server=ServerSettings(log_format=log_format),  # type: ignore[arg-type]
        auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
    )


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the service's handler (JSON) into a buffer."""
    out = io.StringIO()
    handler = log_handler(_settings(), out)
    logger = logging.getLogger(f"test-logging-{id(out)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, out
    logger.removeHandler(handler)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_carries_the_ids_bound_where_it_was_written(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    token = bind(request_id="r1", user_id="alice", session_id="s1")
    try:
        logger.info("hello %s", "world")
    finally:
        reset(token)
    logger.info("outside")
    inside, outside = _lines(out)
    assert inside["message"] == "hello world"
    assert inside["level"] == "INFO"
    assert (inside["request_id"], inside["user_id"], inside["session_id"]) == ("r1", "alice", "s1")
    assert "turn_id" not in inside
    assert str(inside["ts"]).endswith("+00:00")
    assert not {"request_id", "user_id", "session_id"} & set(outside)


def test_a_json_line_holds_its_traceback_and_no_secret(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    try:
        raise ValueError(f"bad secret {SECRET}")
    except ValueError:
        logger.exception("it failed")
    (line,) = _lines(out)
    assert "ValueError: bad secret [REDACTED]" in str(line["exc_info"])
    assert SECRET not in out.getvalue()


async def test_a_turn_s_task_keeps_the_request_s_ids_after_the_request_ends(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    token = bind(request_id="r2", user_id="bob")
    try:
        context = turn_context(session_id="s2", turn_id="t2", user_id="bob")
    finally:
        reset(token)  # the request is over; the turn goes on

    async def turn() -> None:
        await asyncio.sleep(0)
        logger.info("turn line")
        await asyncio.create_task(child())

    async def child() -> None:
        logger.info("child line")

    await asyncio.create_task(turn(), context=context)
    for line in _lines(out):
        assert (line["request_id"], line["user_id"], line["session_id"], line["turn_id"]) == (
            "r2",
            "bob",
            "s2",
            "t2",
        )
    assert current().request_id is None


def test_a_detached_context_has_no_ids() -> None:
    token = bind(request_id="r3", turn_id="t3")
    try:
        assert detached().run(current).fields() == {}
    finally:
        reset(token)


def test_text_lines_end_with_the_known_ids() -> None:
    record = logging.LogRecord("copilot", logging.INFO, "f", 1, "hello", None, None)
    record.session_id, record.turn_id = "s4", "t4"
    text = TextFormatter().format(record)
    assert text.endswith("INFO copilot: hello [session=s4 turn=t4]")


def test_json_formatter_without_the_ids_filter_still_writes_json() -> None:
    record = logging.LogRecord("copilot", logging.WARNING, "f", 1, "plain %d", (1,), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "plain 1"


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert not wants_json("auto", Terminal())
    assert wants_json("auto", io.StringIO())
    assert not wants_json("text", io.StringIO())
    assert wants_json("json", Terminal())
