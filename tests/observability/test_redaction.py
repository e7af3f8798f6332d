"""The redaction filter: known secrets, secret-looking text and message text never get out."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from app.config import AnthropicSettings, AuthSettings, DatabaseSettings, RedisSettings, Settings
from app.observability.redaction import REDACTED, Redactor, UserText, secret_values

JWT_SECRET = "jwt-secret-for-the-redaction-test"
API_KEY = "api-key-0123456789abcdef"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, Redactor]]:
    """A logger whose handler redacts, and what it wrote."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    redactor = Redactor([JWT_SECRET, API_KEY, "short"])
    handler.addFilter(redactor)
    logger = logging.getLogger(f"test-redaction-{id(out)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, out, redactor
    logger.removeHandler(handler)


def test_known_secret_values_are_replaced_in_messages_and_arguments(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, out, _ = captured
    logger.info("secret %s and key=%s", JWT_SECRET, API_KEY)
    logger.info(f"inline {API_KEY}")
    text = out.getvalue()
    assert JWT_SECRET not in text
    assert API_KEY not in text
    assert text.count(REDACTED) == 3


def test_a_secret_in_an_exception_s_traceback_is_replaced(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, out, _ = captured
    try:
        raise RuntimeError(f"could not connect with {API_KEY}")
    except RuntimeError:
        logger.exception("failed")
    text = out.getvalue()
    assert "Traceback" in text
    assert "RuntimeError: could not connect with [REDACTED]" in text
    assert API_KEY not in text


def test_values_shorter_than_eight_characters_are_not_searched_for(
    captured: tuple[logging.Logger, io.StringIO, Redactor],
) -> None:
    logger, out, _ = captured
    logger.info("a short answer")
    assert "a short answer" in out.getvalue()


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("headers={'authorization': 'Bearer tok3n-value'}", "tok3n-value"),
        ("{'x-api-key': 'some-unknown-key-value'}", "some-unknown-key-value"),
        (f"token {JWT} rejected", JWT),
        ("key sk-ant-api03-AbC_dEf-123 refused", "sk-ant-api03-AbC_dEf-123"),
        ("langfuse sk-lf-1234-abcd failed", "sk-lf-1234-abcd"),
        ("postgresql+asyncpg://app:s3cr3t-pw@db:5432/copilot", "s3cr3t-pw"),
        ("redis://:redis-pass@cache:6379/0", "redis-pass"),
    ],
)
def test_secret_looking_text_is_replaced_whatever_its_source(text: str, gone: str) -> None:
    redacted = Redactor().redact(text)
    assert gone not in redacted
    assert REDACTED in redacted


def test_a_url_keeps_its_user_and_host_without_the_password() -> None:
    assert Redactor().redact("postgresql://app:pw-12345@db:5432/x") == (
        f"postgresql://app:{REDACTED}@db:5432/x"
    )


def _record(*args: object) -> logging.LogRecord:
    return logging.LogRecord("x", logging.DEBUG, "f", 1, "turn: %s", args, None)


def test_message_text_is_hidden_unless_prompts_may_be_logged() -> None:
    hidden = _record(UserText("hi there"))
    Redactor(log_prompts=False).filter(hidden)
    assert hidden.getMessage() == "turn: [8 characters of message text hidden]"
    shown = _record(UserText("hi there"))
    Redactor(log_prompts=True).filter(shown)
    assert shown.getMessage() == "turn: hi there"


def test_message_text_hides_itself_where_no_redactor_runs() -> None:
    assert "secret prompt" not in f"{UserText('secret prompt')}"


def test_secrets_stay_redacted_when_prompts_are_logged() -> None:
    record = _record(UserText(f"my key is {API_KEY}"))
    Redactor([API_KEY], log_prompts=True).filter(record)
    assert record.getMessage() == f"turn: my key is {REDACTED}"


def test_sql_parameters_are_message_text() -> None:
    error = "(IntegrityError) duplicate\n[SQL: INSERT ...]\n[parameters: ('hello, my prompt',)]"
    assert "hello, my prompt" not in Redactor().redact(error)
    assert "hello, my prompt" in Redactor(log_prompts=True).redact(error)


def test_secret_values_come_from_every_secret_setting() -> None:
    settings = Settings(
        auth=AuthSettings(
            jwt_secret=SecretStr(JWT_SECRET),
            api_keys=SecretStr(f"alice={API_KEY},bare-key-without-user-0123"),
            metrics_token=SecretStr("metrics-token-0123456789"),
        ),
        anthropic=AnthropicSettings(api_key=SecretStr("sk-ant-test-key-0001")),
        database=DatabaseSettings(url="postgresql://app:db-password@db/x"),
        redis=RedisSettings(url="redis://:redis-password@cache:6379/0"),
    )
    values = secret_values(settings)
    for secret in (
        JWT_SECRET,
        API_KEY,
        "bare-key-without-user-0123",
        "metrics-token-0123456789",
        "sk-ant-test-key-0001",
        "db-password",
        "redis-password",
    ):
        assert secret in values


def test_api_keys_listed_as_json_are_secret_values() -> None:
    keys = '{"alice": ["key,with,commas=0123"], "bob": "b=0123456789abcdef"}'
    values = secret_values(Settings(auth=AuthSettings(api_keys=SecretStr(keys))))
    assert {"key,with,commas=0123", "b=0123456789abcdef"} <= set(values)
