"""Settings: one pydantic-settings object read from `.env.default`, `.env`, then the environment.

Each group is its own `BaseSettings` so that variables keep the flat names operators know
(`DATABASE_URL`, `COPILOT_JWT_SECRET`, ...). Empty values count as unset, so `.env.default` can
list every variable, even those without a default.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_FILES = (".env.default", ".env")

API_KEY_MIN_CHARS = 16
_API_KEY_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


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
    # SIGTERM: first a drain (not ready, new chats refused, running turns may finish), then
    # the stop (what still runs is interrupted; streams and final writes get the grace).
    drain_s: float = Field(default=15.0, ge=0)
    graceful_shutdown_s: float = Field(default=10.0, ge=0)
    migrate_on_start: bool = True
    log_level: str = "INFO"
    # Lines as text or JSON; auto: text on a terminal, JSON otherwise (a container, a file).
    log_format: Literal["auto", "text", "json"] = "auto"
    # Whether log lines may carry message text (prompts and replies); secrets never.
    log_prompts: bool = False
    replica_id: str | None = None
    keepalive_s: int = Field(default=5, ge=1)
    header_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=2000, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    hsts_max_age_s: int = Field(default=0, ge=0)
    # The playground page at / and /playground (static; it calls the API as its user).
    playground: bool = True

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        """A JSON list or a comma-separated string of exact origins (`scheme://host[:port]`)."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if not isinstance(value, list):
            return value
        # Browsers send scheme and host in lower case, and the match is exact.
        origins = [str(origin).strip().lower() for origin in value if str(origin).strip()]
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"COPILOT_CORS_ORIGINS: {origin!r} is not an exact origin: write "
                    "scheme://host[:port], without a path, a trailing '/' or a wildcard"
                )
        return origins


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
    metrics_token: SecretStr | None = None
    docs: Literal["public", "auth", "off"] | None = None

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < API_KEY_MIN_CHARS:
            raise ValueError(
                f"COPILOT_METRICS_TOKEN is shorter than {API_KEY_MIN_CHARS} characters"
            )
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_keys(value.get_secret_value())
        return value

    def api_key_hashes(self) -> dict[str, str]:
        """Map sha256(key) -> user id (see `parse_api_keys`)."""
        if self.api_keys is None:
            return {}
        return parse_api_keys(self.api_keys.get_secret_value())

    @property
    def configured(self) -> bool:
        """Whether any authentication is configured (else: single local user mode)."""
        return bool(self.jwt_secret or self.jwt_public_key or self.api_keys)

    @property
    def docs_access(self) -> Literal["public", "auth", "off"]:
        """Who may read /openapi.json, /docs and /redoc: unset means public only in local mode."""
        if self.docs is not None:
            return self.docs
        return "auth" if self.configured else "public"


def _listed_api_keys(text: str) -> list[tuple[str, str]]:
    """`user=key` entries split at the first `=` (user ids have none); a bare key has no `=`."""
    entries: list[tuple[str, str]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if "=" not in entry:
            entries.append(("", entry))
            continue
        user, _, key = entry.partition("=")
        if not _API_KEY_USER.fullmatch(user):
            raise ValueError(
                f"COPILOT_API_KEYS entry {len(entries) + 1}: the text before the first '=' must "
                "be a user id (letters, digits, '_', '.', '@', '-'); a key containing '=' is "
                "written 'user=key', or list the keys as JSON"
            )
        entries.append((user, key))
    return entries


def _json_api_keys(text: str) -> list[tuple[str, str]]:
    """`{"user": "key" | ["key", ...]}`: for keys with commas or any other character."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        # The decoder's message names a position, never the text around it.
        raise ValueError(f"COPILOT_API_KEYS is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("COPILOT_API_KEYS as JSON must be an object of user -> key(s)")
    entries: list[tuple[str, str]] = []
    for user, keys in data.items():
        listed = keys if isinstance(keys, list) else [keys]
        for key in listed:
            if not user or len(user) > 255 or not isinstance(key, str):
                raise ValueError(
                    f"COPILOT_API_KEYS entry {len(entries) + 1}: users must be non-empty ids "
                    "(at most 255 characters) and keys strings"
                )
            entries.append((user, key))
    return entries


def parse_api_keys(text: str) -> dict[str, str]:
    """Map sha256(key) -> user id for `COPILOT_API_KEYS`.

    Two forms, each with one reading of any value: a comma-separated list of `key` (no `=`),
    `user=key` or `user=sha256:<hex>`, split at the first `=`, which a user id never contains;
    or a JSON object `{"user": "key" | ["key", ...]}` for keys containing commas. Empty keys,
    keys shorter than API_KEY_MIN_CHARS and a key listed twice are refused; errors name the
    entry by its position, never by its text (which may be the secret).
    """
    stripped = text.strip()
    entries = _json_api_keys(stripped) if stripped.startswith("{") else _listed_api_keys(text)
    if not entries:
        raise ValueError("COPILOT_API_KEYS is set but lists no key")
    hashes: dict[str, str] = {}
    for position, (user, key) in enumerate(entries, 1):
        where = f"COPILOT_API_KEYS entry {position}"
        if key.startswith("sha256:"):
            digest = key.removeprefix("sha256:").lower()
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError(f"{where}: 'sha256:' must be followed by 64 hex digits")
        elif not key:
            raise ValueError(f"{where}: the key is empty")
        elif not key.strip("="):
            raise ValueError(
                f"{where}: the key after the first '=' is only '='; a key that ends in '=' "
                "must be written with its user, 'user=key' (or listed as JSON)"
            )
        elif len(key) < API_KEY_MIN_CHARS:
            raise ValueError(f"{where}: the key is shorter than {API_KEY_MIN_CHARS} characters")
        else:
            digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in hashes:
            raise ValueError(f"{where}: the same key is listed twice")
        hashes[digest] = user or f"apikey-{digest[:12]}"
    return hashes


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


# What a child process the server starts for a model (the Claude Code CLI) may inherit from
# the server's environment: how to run and reach the network, nothing else.
CHILD_ENV_KEEP = re.compile(
    r"^(PATH|LANG|LANGUAGE|LC_[A-Z]+|TZ|TERM|SHELL|USER|LOGNAME|"
    r"(HTTPS?|ALL|NO)_PROXY|(https?|all|no)_proxy|SSL_CERT_(FILE|DIR)|NODE_EXTRA_CA_CERTS)$"
)


def blanked_server_environment() -> dict[str, str]:
    """Every variable of the server's environment a child must not see, set to empty.

    A child process inherits the server's whole environment (the SDK starts the CLI that way):
    the database URL, JWT secret, API keys. Overriding them with empty values is the only way
    to keep them from it, and from a model that can run commands there."""
    return {name: "" for name in os.environ if not CHILD_ENV_KEEP.match(name)}


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

    backend: Literal["anthropic", "claude_sdk"] = "claude_sdk"
    max_tool_rounds: int = 8
    heartbeat_s: float = 10.0
    send_timeout_s: float = 30.0
    max_message_chars: int = 100_000
    max_attachment_bytes: int = Field(default=500_000, ge=1)
    max_attachments: int = Field(default=4, ge=0)
    flush_interval_s: float = 2.0
    eventlog_flush_ms: float = 25.0
    eventlog_ttl_s: int = 3600
    retry_max_attempts: int = 4
    retry_max_total_s: float = 60.0
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 8.0
    lease_ttl_s: float = 30.0
    # How often each replica looks for turns of dead replicas (0: never; then an orphan is
    # recorded when its session's next message arrives). An orphan is found within
    # `lease_ttl_s` plus this (plus 20% jitter).
    reap_interval_s: float = Field(default=5.0, ge=0)
    start_concurrency: int = Field(default=1024, ge=1)
    max_active_turns_per_user: int = Field(default=0, ge=0)
    # What a message sent while its session's turn runs does, when neither the request nor
    # the session says: reject (409), enqueue (its own turn, in order), interrupt, steer.
    on_conflict: Literal["reject", "enqueue", "interrupt", "steer"] = "reject"
    max_queued: int = Field(default=10, ge=1)
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
    # Patterns denied on top of the built-in ones (`hooks.DEFAULT_DENIED_BASH`).
    denied_bash: list[str] = Field(default_factory=list)
    cli_path: Path | None = None
    # CLIs booting at once (None: one per CPU, 0: no limit); a boot is ~0.4 s of one core.
    max_booting: int | None = Field(default=None, ge=0)

    @property
    def builtin_tool_names(self) -> list[str]:
        """`builtin_tools` as a list of CLI tool names."""
        return [name.strip() for name in self.builtin_tools.split(",") if name.strip()]

    @property
    def boot_limit(self) -> int:
        """CLIs that may boot at once (`max_booting`, else the CPUs this process may use)."""
        if self.max_booting is not None:
            return self.max_booting
        return len(os.sched_getaffinity(0))

    def workspaces_root(self, data_dir: Path) -> Path:
        """Where session workspaces live (`COPILOT_WORKSPACES_DIR`, else under the data dir)."""
        return self.workspaces_dir or data_dir / "workspaces"


class ContextSettings(BaseSettings):
    """The models' context windows, and how the context ladder makes a conversation fit."""

    model_config = _config("COPILOT_")

    # Tokens of context per model-name prefix (the longest prefix wins; 200,000 otherwise).
    context_windows: dict[str, int] = Field(default_factory=lambda: {"claude": 200_000})
    compact_at: float = Field(default=0.8, gt=0, le=1)
    compact_model: str | None = None
    compact_timeout_s: float = Field(default=60.0, gt=0)
    compact_keep_messages: int = Field(default=4, ge=1)
    compact_summary_tokens: int = Field(default=2048, ge=64)

    def window_for(self, model: str) -> int:
        """The context window of `model`, in tokens."""
        best: tuple[int, int] | None = None
        for prefix, tokens in self.context_windows.items():
            if model.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), tokens)
        return best[1] if best else 200_000


class LangfuseSettings(BaseSettings):
    """Langfuse traces of turns and feedback scores; off unless both keys are set.

    Exports run on the SDK's own threads: `timeout_s` bounds one export (its retries
    included) and the final flush at shutdown; nothing on the event loop waits on it.
    """

    model_config = _config("LANGFUSE_")

    public_key: str | None = None
    secret_key: SecretStr | None = None
    base_url: str = "https://cloud.langfuse.com"
    timeout_s: float = Field(default=3.0, gt=0)
    flush_interval_s: float = Field(default=1.0, gt=0)
    # gzip (the default) for a remote Langfuse: fewer bytes on the wire for about a tenth of
    # the export's CPU (some 20 µs per turn, measured); "none" for one on the same network.
    otel_compression: Literal["gzip", "none"] = "gzip"

    @property
    def enabled(self) -> bool:
        """Whether traces are sent (both keys set)."""
        return bool(self.public_key and self.secret_key)


class Settings(BaseModel):
    """Every setting of the service, grouped by concern."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    turns: TurnSettings = Field(default_factory=TurnSettings)
    sdk: SdkSettings = Field(default_factory=SdkSettings)
    context: ContextSettings = Field(default_factory=ContextSettings)
    langfuse: LangfuseSettings = Field(default_factory=LangfuseSettings)
