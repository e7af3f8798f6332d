"""Settings: one pydantic-settings object read from `.env.default`, `.env`, then the environment.

Each group is its own `BaseSettings` so that variables keep the flat names operators know
(`DATABASE_URL`, `COPILOT_JWT_SECRET`, ...). Empty values count as unset, so `.env.default` can
list every variable, even those without a default.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILES = (".env.default", ".env")


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=ENV_FILES,
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )


class ServerSettings(BaseSettings):
    """Where and how the HTTP server runs."""

    model_config = _config("COPILOT_")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".copilot")
    allow_insecure: bool = False
    max_body_bytes: int = 1_000_000
    max_title_chars: int = 200
    max_metadata_bytes: int = 16_384
    graceful_shutdown_s: float = 10.0
    migrate_on_start: bool = True
    log_level: str = "INFO"
    replica_id: str | None = None


class DatabaseSettings(BaseSettings):
    """PostgreSQL; with no URL `copilot serve` starts an embedded one under the data dir."""

    model_config = _config("COPILOT_DB_")

    url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "url"))
    pool_size: int = 5
    max_overflow: int = 10
    turn_pool_size: int = 20

    @field_validator("url")
    @classmethod
    def _asyncpg_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                return "postgresql+asyncpg://" + value[len(plain) :]
        return value


class RedisSettings(BaseSettings):
    """Redis; with no URL `copilot serve` starts an embedded one under the data dir."""

    model_config = _config("COPILOT_REDIS_")

    url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "url"))
    cluster: bool = False
    key_prefix: str = "copilot"
    max_connections: int = 64
    max_readers: int = 1000
    pool_timeout_s: float = 10.0


class AuthSettings(BaseSettings):
    """JWT bearer tokens, static API keys, or (neither set) one local user."""

    model_config = _config("COPILOT_")

    jwt_secret: SecretStr | None = None
    jwt_public_key: SecretStr | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256", "RS256", "ES256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_ttl_s: int = 3600
    api_keys: SecretStr | None = None
    local_user: str = "local"

    def api_key_hashes(self) -> dict[str, str]:
        """Map sha256(key) -> user id; entries are `key`, `user=key` or `user=sha256:<hex>`."""
        hashes: dict[str, str] = {}
        if self.api_keys is None:
            return hashes
        for raw in self.api_keys.get_secret_value().split(","):
            entry = raw.strip()
            if not entry:
                continue
            user, sep, key = entry.partition("=")
            if not sep:
                user, key = "", entry
            if key.startswith("sha256:"):
                digest = key.removeprefix("sha256:").lower()
            else:
                digest = hashlib.sha256(key.encode()).hexdigest()
            hashes[digest] = user or f"apikey-{digest[:12]}"
        return hashes

    @property
    def configured(self) -> bool:
        """Whether any authentication is configured (else: single local user mode)."""
        return bool(self.jwt_secret or self.jwt_public_key or self.api_keys)


class AnthropicSettings(BaseSettings):
    """The model upstream; with neither key nor base URL the fake upstream runs in-process."""

    model_config = _config("COPILOT_ANTHROPIC_")

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "api_key")
    )
    base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "base_url")
    )
    model: str = "claude-sonnet-4-6"
    title_model: str = "claude-haiku-4-5"
    max_tokens: int = 4096
    system_prompt: str = "You are a helpful assistant."
    request_timeout_s: float = 600.0
    connect_timeout_s: float = 10.0

    @property
    def simulated(self) -> bool:
        """True when no upstream is configured and replies come from the fake upstream."""
        return self.api_key is None and self.base_url is None


class Rate(BaseModel):
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal


def _default_rate_card() -> dict[str, Rate]:
    sonnet = Rate(
        input=Decimal(3),
        output=Decimal(15),
        cache_read=Decimal("0.30"),
        cache_write=Decimal("3.75"),
    )
    haiku = Rate(
        input=Decimal(1), output=Decimal(5), cache_read=Decimal("0.10"), cache_write=Decimal("1.25")
    )
    opus = Rate(
        input=Decimal(5),
        output=Decimal(25),
        cache_read=Decimal("0.50"),
        cache_write=Decimal("6.25"),
    )
    return {"claude-sonnet": sonnet, "claude-haiku": haiku, "claude-opus": opus}


class TurnSettings(BaseSettings):
    """How a turn runs: backend, limits, retries, heartbeats, persistence cadence, prices."""

    model_config = _config("COPILOT_")

    backend: Literal["anthropic", "claude_sdk"] = "anthropic"
    max_tool_rounds: int = 8
    heartbeat_s: float = 10.0
    send_timeout_s: float = 30.0
    max_message_chars: int = 100_000
    flush_interval_s: float = 2.0
    eventlog_flush_ms: float = 25.0
    eventlog_ttl_s: int = 3600
    retry_max_attempts: int = 4
    retry_max_total_s: float = 60.0
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 8.0
    lease_ttl_s: float = 30.0
    start_concurrency: int = Field(default=16, ge=1)
    title_generation: bool = True
    rate_card: dict[str, Rate] = Field(default_factory=_default_rate_card)

    def rate_for(self, model: str) -> Rate | None:
        """The rate whose key is the longest prefix of `model`."""
        best: tuple[int, Rate] | None = None
        for prefix, rate in self.rate_card.items():
            if model.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rate)
        return best[1] if best else None


class SdkSettings(BaseSettings):
    """The Claude Agent SDK backend: warm CLI processes, workspaces, the CLI's own limits.

    `max_live` defaults to 6: an idle CLI holds ~120 MB PSS and a busy one ~190 MB, so six warm
    clients stay under ~1.2 GB on a small (2-4 GB) machine; the least recently used closes first.
    """

    model_config = _config("COPILOT_SDK_")

    workspaces_dir: Path | None = Field(
        default=None, validation_alias=AliasChoices("COPILOT_WORKSPACES_DIR", "workspaces_dir")
    )
    idle_s: float = Field(default=600.0, gt=0)
    max_live: int = Field(default=6, ge=1)
    idle_timeout_s: float = Field(default=180.0, gt=0)
    max_retries: int = Field(default=1, ge=0)
    max_empty_tool_calls: int = Field(default=3, ge=1)
    stop_grace_s: float = Field(default=5.0, ge=0)
    builtin_tools: str = ""
    max_subagents: int = Field(default=2, ge=0)
    denied_bash: list[str] = Field(
        default_factory=lambda: ["sudo", "rm -rf /", "mkfs", "shutdown", "reboot"]
    )
    cli_path: Path | None = None

    @property
    def builtin_tool_names(self) -> list[str]:
        """`builtin_tools` as a list of CLI tool names."""
        return [name.strip() for name in self.builtin_tools.split(",") if name.strip()]

    def workspaces_root(self, data_dir: Path) -> Path:
        """Where session workspaces live (`COPILOT_WORKSPACES_DIR`, else under the data dir)."""
        return self.workspaces_dir or data_dir / "workspaces"


class Settings(BaseModel):
    """Every setting of the service, grouped by concern."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    turns: TurnSettings = Field(default_factory=TurnSettings)
    sdk: SdkSettings = Field(default_factory=SdkSettings)
