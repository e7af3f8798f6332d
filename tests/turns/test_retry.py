"""RetryPolicy: jittered exponential backoff, bounded by attempts and total time."""

from __future__ import annotations

import random

import pytest

from app.config import TurnSettings
from app.turns.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=5, max_total_s=100.0, base_delay_s=1.0, max_delay_s=8.0)


@pytest.fixture
def shortest_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jitter drawn at its lowest."""
    monkeypatch.setattr(random, "uniform", lambda low, high: low)


@pytest.fixture
def longest_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jitter drawn at its highest."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


@pytest.mark.parametrize(("attempt", "backoff"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)])
def test_the_delay_is_between_half_and_all_of_the_exponential_backoff(
    attempt: int, backoff: float
) -> None:
    delays = [POLICY.delay(attempt, 0.0, None) for _ in range(200)]
    assert all(d is not None and backoff / 2 <= d <= backoff for d in delays)


@pytest.mark.usefixtures("longest_jitter")
def test_the_backoff_doubles_with_each_attempt() -> None:
    assert [POLICY.delay(n, 0.0, None) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


@pytest.mark.usefixtures("shortest_jitter")
def test_the_jitter_can_halve_the_backoff() -> None:
    assert POLICY.delay(3, 0.0, None) == 2.0


def test_the_delays_are_jittered() -> None:
    assert len({POLICY.delay(2, 0.0, None) for _ in range(20)}) > 1


@pytest.mark.usefixtures("longest_jitter")
def test_the_backoff_is_capped_at_the_maximum_delay() -> None:
    policy = RetryPolicy(max_attempts=20, max_total_s=1000.0, base_delay_s=1.0, max_delay_s=8.0)
    assert policy.delay(10, 0.0, None) == 8.0


@pytest.mark.usefixtures("shortest_jitter")
def test_the_delay_is_never_shorter_than_retry_after() -> None:
    assert POLICY.delay(1, 0.0, 3.5) == 3.5


@pytest.mark.usefixtures("shortest_jitter")
def test_retry_after_beyond_the_maximum_delay_is_honoured() -> None:
    assert POLICY.delay(1, 0.0, 30.0) == 30.0


@pytest.mark.usefixtures("longest_jitter")
def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    assert POLICY.delay(3, 0.0, 0.5) == 4.0


def test_the_last_attempt_gets_no_retry() -> None:
    assert POLICY.delay(5, 0.0, None) is None


def test_the_attempt_before_the_last_still_gets_a_retry() -> None:
    assert POLICY.delay(4, 0.0, None) is not None


def test_one_attempt_allowed_means_no_retry() -> None:
    policy = RetryPolicy(max_attempts=1, max_total_s=100.0, base_delay_s=1.0, max_delay_s=8.0)
    assert policy.delay(1, 0.0, None) is None


@pytest.mark.usefixtures("longest_jitter")
def test_no_retry_when_the_wait_would_pass_the_total_time() -> None:
    assert POLICY.delay(1, 99.5, None) is None


@pytest.mark.usefixtures("longest_jitter")
def test_a_retry_that_ends_exactly_at_the_total_time_is_allowed() -> None:
    assert POLICY.delay(1, 99.0, None) == 1.0


def test_no_retry_when_retry_after_passes_the_total_time() -> None:
    assert POLICY.delay(1, 0.0, 150.0) is None


def test_no_retry_once_the_total_time_is_spent() -> None:
    assert POLICY.delay(1, 100.0, None) is None


def test_the_delay_is_a_float() -> None:
    assert isinstance(POLICY.delay(1, 0.0, 2), float)


def test_the_policy_comes_from_the_turn_settings() -> None:
    settings = TurnSettings(
        retry_max_attempts=3,
        retry_max_total_s=12.0,
        retry_base_delay_s=0.25,
        retry_max_delay_s=2.0,
    )
    assert RetryPolicy.from_settings(settings) == RetryPolicy(
        max_attempts=3, max_total_s=12.0, base_delay_s=0.25, max_delay_s=2.0
    )
