"""The fake upstream as the official `anthropic` SDK sees it: streams, tools, errors, usage."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx2
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle, fake_upstream_task
from app.devtools.fake_upstream.tokens import generated_words

MODEL = "claude-test-1"


def _ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_stream_helper_yields_the_planned_text_and_exact_usage(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=1000, messages=_ask("[[fake:text tokens=40]]")
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "".join(generated_words(40))
    assert final.model == MODEL
    assert final.id.startswith("msg_")
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 40


def test_create_stream_follows_the_event_grammar(client: anthropic.Anthropic) -> None:
    stream = client.messages.create(
        model=MODEL, max_tokens=100, stream=True, messages=_ask("[[fake:text tokens=20]]")
    )
    types = [event.type for event in stream]
    assert types[0] == "message_start"
    assert types[1] == "content_block_start"
    assert set(types[2:-4]) == {"content_block_delta"}
    assert types[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_non_streaming_default_reply_echoes_the_last_user_text(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(model=MODEL, max_tokens=100, messages=_ask("hello there"))
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: hello there"
    assert message.usage.output_tokens == 3


def test_beta_endpoint_with_query_string_streams(client: anthropic.Anthropic) -> None:
    with client.beta.messages.stream(
        model=MODEL, max_tokens=100, messages=_ask("hi"), betas=["some-beta-2025-01-01"]
    ) as stream:
        assert stream.get_final_text() == "Echo: hi"


def test_tool_round_trip_quotes_the_tool_result(client: anthropic.Anthropic) -> None:
    tools: list[Any] = [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}]
    messages: list[Any] = _ask('[[fake:tool name=lookup input={"key": "abc"} text="Checking."]]')
    with client.messages.stream(
        model=MODEL, max_tokens=100, tools=tools, messages=messages
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.type == "tool_use"
    assert (call.name, call.input) == ("lookup", {"key": "abc"})
    assert call.id.startswith("toolu_")
    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "value-1"}],
        },
    ]
    second = client.messages.create(model=MODEL, max_tokens=100, tools=tools, messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == "Tool result: value-1"


def test_thinking_block_carries_a_signature(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=100, messages=_ask("[[fake:thinking thinking=8 tokens=4]]")
    ) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "".join(generated_words(8, offset=3))
    assert len(thinking.signature) > 20
    assert text.type == "text"
    assert final.usage.output_tokens == 12


@pytest.mark.parametrize(
    ("status", "exc_type", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.RequestTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_error_status_raises_the_matching_sdk_exception(
    client: anthropic.Anthropic, status: int, exc_type: type[Exception], error_type: str
) -> None:
    with pytest.raises(exc_type) as caught:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=_ask(f"[[fake:error status={status}]]")
        )
    error = caught.value
    assert isinstance(error, anthropic.APIStatusError)
    assert error.status_code == status
    assert error.type == error_type
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert isinstance(error.body, dict)
    assert error.body["request_id"] == error.request_id
    if status == 404:
        assert error.api_message == f"model: {MODEL}"


def test_rate_limit_error_has_a_readable_retry_after(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=_ask("[[fake:error status=429 retry_after=7]]")
        )
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-should-retry"] == "true"


def test_error_with_times_lets_the_sdk_retry_succeed(fake: FakeUpstreamHandle) -> None:
    directive = "[[fake:error status=529 times=2 retry_after=0.01]] hi"
    with anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=2) as sdk:
        message = sdk.messages.create(model=MODEL, max_tokens=10, messages=_ask(directive))
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: hi"
    assert [r["status"] for r in fake.requests("/v1/messages")] == [529, 529, 200]


def test_prompt_too_long_reports_the_estimate_and_the_limit(client: anthropic.Anthropic) -> None:
    messages = _ask("[[fake:text context=50]] " + "word " * 100)
    counted = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    assert caught.value.api_message == f"prompt is too long: {counted} tokens > 50 maximum"


def test_context_tokens_setting_applies_without_a_directive() -> None:
    from app.devtools.fake_upstream import FakeUpstreamConfig, running_fake_upstream

    with (
        running_fake_upstream(config=FakeUpstreamConfig(context_tokens=10)) as handle,
        anthropic.Anthropic(base_url=handle.base_url, api_key="t", max_retries=0) as sdk,
    ):
        assert sdk.messages.create(model=MODEL, max_tokens=5, messages=_ask("short")).content
        with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
            sdk.messages.create(model=MODEL, max_tokens=5, messages=_ask("long " * 20))


def test_dropped_stream_raises_without_message_stop(client: anthropic.Anthropic) -> None:
    seen: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.messages.stream(
            model=MODEL, max_tokens=100, messages=_ask("[[fake:text tokens=50 drop_after=4]]")
        ) as stream,
    ):
        seen.extend(event.type for event in stream)
    assert "message_stop" not in seen


def test_dropped_non_streaming_response_raises_a_connection_error(
    client: anthropic.Anthropic,
) -> None:
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(
            model=MODEL, max_tokens=10, messages=_ask("[[fake:text drop_after=1]]")
        )


def test_error_event_mid_stream_raises_after_partial_output(client: anthropic.Anthropic) -> None:
    text: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=_ask("[[fake:error status=529 after=4 tokens=30]]"),
        ) as stream,
    ):
        text.extend(stream.text_stream)
    assert text
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_max_tokens_stops_the_stream_with_stop_reason_max_tokens(
    client: anthropic.Anthropic,
) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=10, messages=_ask("[[fake:text tokens=50]]")
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 10
    assert final.content[0].type == "text"
    assert final.content[0].text == "".join(generated_words(50)[:10])


def test_count_tokens_matches_the_usage_of_a_reply(client: anthropic.Anthropic) -> None:
    system = "You are terse. " * 10
    messages = _ask("count me please")
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=messages)
    reply = client.messages.create(model=MODEL, max_tokens=10, system=system, messages=messages)
    assert counted.input_tokens == reply.usage.input_tokens > 0


def test_cache_breakpoint_writes_then_reads_and_usage_adds_up(client: anthropic.Anthropic) -> None:
    system: Any = [
        {"type": "text", "text": "Long instructions. " * 50, "cache_control": {"type": "ephemeral"}}
    ]
    usages = []
    for question in ("first question", "second, different question"):
        messages = _ask(question)
        counted = client.messages.count_tokens(model=MODEL, system=system, messages=messages)
        with client.messages.stream(
            model=MODEL, max_tokens=50, system=system, messages=messages
        ) as stream:
            usage = stream.get_final_message().usage
        total = (
            usage.input_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        assert total == counted.input_tokens
        usages.append(usage)
    written, read = usages
    assert written.cache_creation_input_tokens
    assert written.cache_creation_input_tokens == read.cache_read_input_tokens
    assert written.cache_read_input_tokens == read.cache_creation_input_tokens == 0


def test_rate_paces_the_stream_and_groups_tokens_per_delta(client: anthropic.Anthropic) -> None:
    started = time.monotonic()
    stream = client.messages.create(
        model=MODEL, max_tokens=100, stream=True, messages=_ask("[[fake:text tokens=60 rate=300]]")
    )
    deltas = [event for event in stream if event.type == "content_block_delta"]
    elapsed = time.monotonic() - started
    assert elapsed >= 59 / 300
    assert 2 <= len(deltas) < 60


def test_delay_holds_back_the_first_byte(client: anthropic.Anthropic) -> None:
    started = time.monotonic()
    client.messages.create(model=MODEL, max_tokens=10, messages=_ask("[[fake:text delay=0.3]]"))
    assert time.monotonic() - started >= 0.3


def test_bad_directive_is_a_400_that_names_the_problem(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="fake directive"):
        client.messages.create(model=MODEL, max_tokens=10, messages=_ask("[[fake:bogus]]"))


async def test_async_task_variant_serves_the_async_client() -> None:
    async with fake_upstream_task() as handle:
        sdk = anthropic.AsyncAnthropic(base_url=handle.base_url, api_key="test", max_retries=0)
        async with (
            sdk,
            sdk.messages.stream(
                model=MODEL, max_tokens=50, messages=_ask("[[fake:text tokens=5 rate=1000]]")
            ) as stream,
        ):
            final = await stream.get_final_message()
    assert final.usage.output_tokens == 5
