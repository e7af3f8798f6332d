"""Settings: `.env.default` documents every variable, and values parse as operators write them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from app.config import AuthSettings, ServerSettings, Settings

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
    monkeypatch.setenv("COPILOT_API_KEYS", "svc=a-service-key-0123456789")
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


BASE64_KEY = "c2VjcmV0LWtleS1mb3ItYWxpY2U="  # what `openssl rand -base64` prints: ends in "="


def _refusal(api_keys: str) -> str:
    with pytest.raises(ValidationError) as refused:
        AuthSettings(api_keys=SecretStr(api_keys))
    return str(refused.value)


def test_api_key_with_equals_sign_is_kept_whole() -> None:
    hashes = AuthSettings(api_keys=SecretStr(f"alice={BASE64_KEY}")).api_key_hashes()
    assert hashes == {hashlib.sha256(BASE64_KEY.encode()).hexdigest(): "alice"}


def test_bare_key_ending_in_equals_sign_is_refused_not_split() -> None:
    message = _refusal("c2VjcmV0LWtleS1mb3ItYWxpY2U==")
    assert "COPILOT_API_KEYS entry 1" in message
    assert "'user=key'" in message
    assert "c2VjcmV0" not in message


def test_empty_api_key_is_refused() -> None:
    assert "entry 2: the key is empty" in _refusal(f"svc={BASE64_KEY},alice=")


def test_short_api_key_is_refused_without_showing_it() -> None:
    message = _refusal("alice=tiny-key")
    assert "entry 1: the key is shorter than 16 characters" in message
    assert "tiny-key" not in message


def test_api_keys_as_json_may_contain_commas_and_equals_signs() -> None:
    keys = (
        '{"alice": ["key,with,commas=0123", "'
        + "sha256:"
        + "ab" * 32
        + '"], "bob": "b=0123456789abcdef"}'
    )
    hashes = AuthSettings(api_keys=SecretStr(keys)).api_key_hashes()
    assert hashes[hashlib.sha256(b"key,with,commas=0123").hexdigest()] == "alice"
    assert hashes["ab" * 32] == "alice"
    assert hashes[hashlib.sha256(b"b=0123456789abcdef").hexdigest()] == "bob"


def test_a_key_listed_twice_is_refused() -> None:
    assert "entry 2: the same key is listed twice" in _refusal(
        f"alice={BASE64_KEY},bob={BASE64_KEY}"
    )


def test_a_bare_key_without_equals_sign_still_maps_to_a_derived_user() -> None:
    hashes = AuthSettings(api_keys=SecretStr("a-bare-key-0123456789")).api_key_hashes()
    ((digest, user),) = hashes.items()
    assert user == f"apikey-{digest[:12]}"


@pytest.mark.parametrize(
    "written",
    [
        "http://localhost:3000, https://Chat.Example.com",
        '["http://localhost:3000", "https://chat.example.com"]',
    ],
)
def test_cors_origins_are_read_comma_separated_or_as_json(
    monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    monkeypatch.setenv("COPILOT_CORS_ORIGINS", written)
    assert ServerSettings().cors_origins == ["http://localhost:3000", "https://chat.example.com"]


@pytest.mark.parametrize("origin", ["*", "https://chat.example.com/", "chat.example.com"])
def test_a_cors_origin_that_is_not_exact_is_refused(
    monkeypatch: pytest.MonkeyPatch, origin: str
) -> None:
    monkeypatch.setenv("COPILOT_CORS_ORIGINS", origin)
    with pytest.raises(ValidationError, match="is not an exact origin"):
        ServerSettings()
