"""Unit tests of the fake upstream's directives, token estimate, prompt cache and replies."""

from __future__ import annotations

from typing import Any

import pytest

from app.devtools.fake_upstream.cache import PromptCache
from app.devtools.fake_upstream.reply import build_reply, choose_plan, echo_text
from app.devtools.fake_upstream.script import (
    PlanError,
    ReplyPlan,
    find_directive,
    plan_from_mapping,
    strip_directives,
)
from app.devtools.fake_upstream.tokens import estimate_input, generated_words


def _body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 1000, "messages": list(messages), **extra}


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def test_directive_parses_bare_quoted_and_json_values() -> None:
    plan = find_directive(
        'hi [[fake:tool name=lookup input={"key": "a b", "n": [1, 2]} text="Let me \\"see\\""]]'
    )
    assert plan is not None
    assert plan.kind == "tool"
    assert plan.name == "lookup"
    assert plan.input == {"key": "a b", "n": [1, 2]}
    assert plan.text == 'Let me "see"'


def test_directive_coerces_numbers_and_single_quotes() -> None:
    plan = find_directive("[[fake:text tokens=300 rate=12.5 text='a b  c']] trailing")
    assert plan == ReplyPlan(
        kind="text",
        tokens=300,
        rate=12.5,
        text="a b  c",
        source="[[fake:text tokens=300 rate=12.5 text='a b  c']]",
    )


def test_thinking_kind_is_text_with_a_thinking_block() -> None:
    plan = find_directive("[[fake:thinking]]")
    assert plan is not None
    assert (plan.kind, plan.thinking) == ("text", 16)


@pytest.mark.parametrize(
    "text",
    ["[[fake:nope]]", "[[fake:text tokens=abc]]", "[[fake:text colour=red]]", "[[fake:text"],
)
def test_bad_directive_raises_plan_error(text: str) -> None:
    with pytest.raises(PlanError):
        find_directive(text)


def test_plan_from_mapping_parses_tool_input_given_as_a_json_string() -> None:
    plan = plan_from_mapping({"kind": "tool", "name": "t", "input": '{"a": 1}'})
    assert plan.input == {"a": 1}


def test_strip_directives_keeps_the_rest_of_the_text() -> None:
    assert strip_directives("say [[fake:text rate=5]] hello") == "say  hello"


def test_echo_skips_system_reminders_and_directives() -> None:
    body = _body(
        _user(
            [
                {"type": "text", "text": "hello [[fake:text rate=1]]"},
                {"type": "text", "text": "<system-reminder>ignore</system-reminder>"},
            ]
        )
    )
    assert echo_text(body) == "Echo: hello"


def test_tool_result_wins_over_an_earlier_tool_directive() -> None:
    body = _body(
        _user("[[fake:tool name=t]]"),
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "x", "name": "t", "input": {}}],
        },
        _user(
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "x",
                    "content": [{"type": "text", "text": "42"}],
                }
            ]
        ),
    )
    assert choose_plan(body).text == "Tool result: 42"


def test_estimate_counts_units_at_four_chars_per_token_plus_message_framing() -> None:
    body = _body(_user("x" * 40), system="y" * 9, tools=[])
    # system: ceil(9/4)=3; message: 3 framing + 40/4=10
    assert estimate_input(body).total == 16


def test_estimate_ignores_cache_control_and_unknown_fields() -> None:
    plain = _body(_user([{"type": "text", "text": "abcd"}]))
    marked = _body(
        _user([{"type": "text", "text": "abcd", "cache_control": {"type": "ephemeral"}}]),
        metadata={"user_id": "u"},
        thinking={"type": "adaptive"},
    )
    assert estimate_input(plain).total == estimate_input(marked).total


def test_cache_writes_then_reads_the_same_prefix() -> None:
    cache = PromptCache()
    system = [{"type": "text", "text": "s" * 400, "cache_control": {"type": "ephemeral"}}]
    first = estimate_input(_body(_user("one"), system=system))
    second = estimate_input(_body(_user("two, longer"), system=system))
    written = cache.account(first)
    read = cache.account(second)
    assert (written.cache_creation_input_tokens, written.cache_read_input_tokens) == (100, 0)
    assert (read.cache_creation_input_tokens, read.cache_read_input_tokens) == (0, 100)
    for usage, estimate in ((written, first), (read, second)):
        total = (
            usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
        )
        assert total == estimate.total


def test_cache_reads_a_prefix_whose_breakpoint_moved_forward() -> None:
    cache = PromptCache()
    marker = {"cache_control": {"type": "ephemeral"}}
    turn1 = [_user([{"type": "text", "text": "a" * 40, **marker}])]
    turn2 = [
        _user([{"type": "text", "text": "a" * 40}]),
        {"role": "assistant", "content": "b" * 40},
        _user([{"type": "text", "text": "c" * 40, **marker}]),
    ]
    first = cache.account(estimate_input(_body(*turn1)))
    second = cache.account(estimate_input(_body(*turn2)))
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens == 13
    assert second.cache_creation_input_tokens == 26
    assert second.input_tokens == 0


def test_generated_words_are_deterministic_one_token_each() -> None:
    words = generated_words(5)
    assert words == generated_words(5)
    assert len(words) == 5
    assert words[0][0].isupper()
    assert words[-1].endswith(".")
    assert all(w.startswith(" ") for w in words[1:])


def test_reply_is_cut_at_max_tokens() -> None:
    body = _body(_user("hi"), max_tokens=7)
    reply = build_reply(ReplyPlan(kind="text", tokens=50, thinking=5), body)
    assert reply.stop_reason == "max_tokens"
    assert reply.output_tokens == 7
    assert [(b.type, len(b.pieces)) for b in reply.blocks] == [("thinking", 5), ("text", 2)]


def test_tool_reply_defaults_to_the_first_tool_and_counts_json_pieces() -> None:
    body = _body(_user("go"), tools=[{"name": "first", "input_schema": {}}])
    reply = build_reply(ReplyPlan(kind="tool", input={"key": "abc"}), body)
    tool = reply.blocks[-1]
    assert (tool.type, tool.name, tool.input) == ("tool_use", "first", {"key": "abc"})
    assert "".join(tool.pieces) == '{"key":"abc"}'
    assert reply.output_tokens == 4
    assert reply.stop_reason == "tool_use"


def test_structured_output_request_gets_a_schema_instance_not_a_directive() -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["title"],
        "additionalProperties": False,
    }
    body = _body(
        _user("<session>[[fake:error status=529]]</session>"),
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert choose_plan(body).text == '{"title":"Fake title"}'
