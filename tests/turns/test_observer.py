"""notify: every observer hears every moment; a failing observer never fails the turn."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from app.backends.errors import UpstreamError
from app.backends.events import ContextChange, StepEnd
from app.context.ladder import Climb
from app.turns.observer import MetricsObserver, TurnObserver, notify


class Recording:
    """An observer that notes what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def turn_started(self, runner: Any) -> None:
        self.calls.append(("turn_started", (runner,)))

    def attempt_failed(self, runner: Any, error: UpstreamError, retry_in: float | None) -> None:
        self.calls.append(("attempt_failed", (runner, error, retry_in)))

    def turn_finished(self, runner: Any) -> None:
        self.calls.append(("turn_finished", (runner,)))


class Failing:
    """An observer that raises at every moment."""

    def turn_started(self, runner: Any) -> None:
        raise RuntimeError("observer broke")

    def attempt_failed(self, runner: Any, error: UpstreamError, retry_in: float | None) -> None:
        raise RuntimeError("observer broke")

    def turn_finished(self, runner: Any) -> None:
        raise RuntimeError("observer broke")


RUNNER = object()


def _observers(*items: object) -> list[TurnObserver]:
    return cast(list[TurnObserver], list(items))


def test_every_observer_is_called() -> None:
    first, second = Recording(), Recording()
    notify(_observers(first, second), "turn_started", RUNNER)
    assert first.calls == second.calls == [("turn_started", (RUNNER,))]


def test_the_moment_s_arguments_are_passed_on() -> None:
    observer = Recording()
    error = UpstreamError("overloaded")
    notify(_observers(observer), "attempt_failed", RUNNER, error, 1.5)
    assert observer.calls == [("attempt_failed", (RUNNER, error, 1.5))]


def test_no_observers_is_fine() -> None:
    notify([], "turn_finished", RUNNER)


def test_a_failing_observer_does_not_raise() -> None:
    notify(_observers(Failing()), "turn_finished", RUNNER)


def test_observers_after_a_failing_one_are_still_called() -> None:
    before, after = Recording(), Recording()
    notify(_observers(before, Failing(), after), "turn_finished", RUNNER)
    assert before.calls == after.calls == [("turn_finished", (RUNNER,))]


def test_a_failing_observer_is_logged_with_its_name_and_moment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="app.turns.observer"):
        notify(_observers(Failing()), "turn_started", RUNNER)
    [record] = caplog.records
    assert "Failing" in record.getMessage()
    assert "turn_started" in record.getMessage()


def test_the_failure_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="app.turns.observer"):
        notify(_observers(Failing()), "turn_started", RUNNER)
    [record] = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_an_observer_watches_only_the_moments_it_has(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after = Recording()
    with caplog.at_level(logging.ERROR, logger="app.turns.observer"):
        notify(_observers(object(), after), "turn_started", RUNNER)
    assert caplog.records == []
    assert after.calls == [("turn_started", (RUNNER,))]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_metrics_observer_counts_the_cli_s_compactions_and_the_ladder_s_climbs() -> None:
    observer, runner = MetricsObserver(), cast(Any, RUNNER)
    cli = {"method": "cli", "trigger": "auto"}
    summary = {"method": "summary", "trigger": "prompt_too_long"}
    rungs = {"rung": "2", "reason": "prompt_too_long"}
    before = (
        _sample("copilot_context_compactions_total", **cli),
        _sample("copilot_context_compactions_total", **summary),
        _sample("copilot_context_rungs_total", **rungs),
    )
    observer.event(runner, ContextChange("cli", "auto", 150_000, 20_000))
    observer.event(runner, StepEnd())  # not a compaction
    climb = Climb(2, ContextChange("summary", "prompt_too_long", 190_000, 30_000))
    observer.climbed(runner, climb, "prompt_too_long")
    after = (
        _sample("copilot_context_compactions_total", **cli),
        _sample("copilot_context_compactions_total", **summary),
        _sample("copilot_context_rungs_total", **rungs),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
