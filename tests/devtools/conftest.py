"""Fixtures for the fake upstream tests: a fresh fake per test, and SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from app.devtools.fake_upstream import FakeUpstreamHandle, running_fake_upstream


def pytest_configure(config: pytest.Config) -> None:
    """Register the label of tests that drive the bundled Claude Code CLI."""
    config.addinivalue_line("markers", "claude_cli: drives the Claude Code CLI (runs in CI)")


@pytest.fixture
def fake() -> Iterator[FakeUpstreamHandle]:
    """A fake upstream running in a background thread for one test."""
    with running_fake_upstream() as handle:
        yield handle


@pytest.fixture
def client(fake: FakeUpstreamHandle) -> Iterator[anthropic.Anthropic]:
    """A sync Anthropic client on the fake, without retries."""
    with anthropic.Anthropic(base_url=fake.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk
