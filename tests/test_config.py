"""Settings: `.env.default` documents every variable, and values parse as operators write them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _variables(group: type[BaseSettings]) -> set[str]:
    prefix = group.model_config.get("env_prefix", "")
    names = set()
    for name, info in group.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]) if choices else f"{prefix}{name}".upper())
    return names


def test_env_default_lists_every_variable_with_a_meaning() -> None:
    text = (ROOT / ".env.default").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    expected: set[str] = set()
    for info in Settings.model_fields.values():
        group = info.annotation
        assert isinstance(group, type)
        assert issubclass(group, BaseSettings)
        expected |= _variables(group)
    assert expected == listed
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = [ln for ln in lines[:index] if ln.strip()][-1]
            assert above.startswith("#") or re.match(r"^[A-Z]", above), line


def test_env_default_parses_to_the_code_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    from_file = Settings()
    monkeypatch.chdir(ROOT / "tests")
    from_code = Settings()
    assert from_file.model_dump() == from_code.model_dump()


def test_flat_environment_names_reach_the_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h:1/d")
    monkeypatch.setenv("REDIS_URL", "redis://h:2/0")
    monkeypatch.setenv("COPILOT_HEARTBEAT_S", "2.5")
    monkeypatch.setenv("COPILOT_API_KEYS", "svc=k")
    settings = Settings()
    assert settings.database.url == "postgresql+asyncpg://u@h:1/d"
    assert settings.redis.url == "redis://h:2/0"
    assert settings.turns.heartbeat_s == 2.5
    assert settings.auth.configured


def test_the_rate_card_prices_by_longest_model_prefix() -> None:
    turns = Settings().turns
    rate = turns.rate_for("claude-haiku-4-5")
    assert rate is not None
    assert rate.output == 5
    assert turns.rate_for("gpt-4") is None


def _described() -> dict[str, str | None]:
    """Each variable of `.env.default` and the comment that describes it: the comment just
    above it or above the variables right before it (a `# ---` section title is not one)."""
    described: dict[str, str | None] = {}
    comment: list[str] = []
    current: str | None = None
    for line in (ROOT / ".env.default").read_text().splitlines():
        if line.startswith("#") and not line.startswith("# ---"):
            comment.append(line.lstrip("# ").strip())
            continue
        if comment:
            current, comment = " ".join(comment), []
        if match := re.match(r"^([A-Z][A-Z0-9_]*)=", line):
            described[match.group(1)] = current
        else:
            current = None
    return described


def test_the_readme_table_describes_every_variable_as_env_default_does() -> None:
    rows = re.findall(
        r"^\| `([A-Z][A-Z0-9_]*)` \| .*? \| (.*) \|$", (ROOT / "README.md").read_text(), re.M
    )
    described = _described()
    assert all(described.values()), [name for name, text in described.items() if not text]
    assert dict(rows) == described
