"""notify: every observer hears every moment; a failing observer never fails the turn."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from app.backends.errors import UpstreamError
from app.turns.observer import TurnObserver, notify


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
