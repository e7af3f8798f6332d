"""Token usage and its price."""

from __future__ import annotations

from app.store.usage import estimated_tokens


def test_output_without_a_count_is_estimated_at_one_token_per_four_characters_rounded_up() -> None:
    assert [estimated_tokens(n) for n in (0, 1, 4, 5, 400)] == [0, 1, 1, 2, 100]
