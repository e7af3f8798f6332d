"""Cleaning text that JSON encoders or PostgreSQL cannot carry."""

from __future__ import annotations

from app.stream.text import clean, clean_text


def test_nul_and_lone_surrogates_become_the_replacement_character() -> None:
    assert clean_text("a\x00b\ud800c\udfffd") == "a\ufffdb\ufffdc\ufffdd"


def test_a_surrogate_pair_split_in_two_code_points_is_joined() -> None:
    assert clean_text("x\ud83d\ude00") == "x\U0001f600"


def test_clean_text_leaves_ordinary_text_alone() -> None:
    text = "héllo, 世界 \U0001f600"
    assert clean_text(text) is text


def test_clean_reaches_nested_values_and_keys_in_place() -> None:
    value = {"a\x00": ["x\x00", {"k": "\ud800"}], "n": 1, "t": ("\x00",)}
    assert clean(value) is value
    assert value == {"a\ufffd": ["x\ufffd", {"k": "\ufffd"}], "n": 1, "t": ["\ufffd"]}
