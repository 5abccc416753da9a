"""Settings: the only module that reads the environment.

Every setting is a ``GATEWAY_*`` variable. What does not fit in variables (several upstreams with
several credentials, tenants to create at start, a price table) may also come from a JSON file
named by ``GATEWAY_CONFIG_FILE``; variables win over the file. Secrets are ``SecretStr`` so that
their ``repr`` (and so any log line or error that prints a settings object) shows ``**********``.
"""

from __future__ import annotations

import enum
import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

MIB = 1024 * 1024


class UpstreamKind(enum.StrEnum):
    """Where an upstream lives; it decides the URL form, the auth header and the protocol."""

    OPENAI = "openai"  # wss://api.openai.com/v1/realtime?model=  Bearer, GA
    AZURE_PREVIEW = "azure_preview"  # /openai/realtime?api-version=&deployment=  api-key, beta
    AZURE_GA = "azure_ga"  # /openai/v1/realtime?model=  api-key, GA
    SIM = "sim"  # the built-in simulator (same wire form as OpenAI)


class Credential(BaseModel):
    """One key that may open upstream sessions; several may serve one upstream (projects,
    regions)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    api_key: SecretStr
    # A credential may point at its own endpoint (an Azure region); default: the upstream's URL.
    url: str | None = None


class UpstreamConfig(BaseModel):
    name: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: UpstreamKind = UpstreamKind.OPENAI
    # Base URL up to and including the version segment, e.g. wss://api.openai.com/v1 or
    # wss://res.openai.azure.com/openai (preview) or wss://res.openai.azure.com/openai/v1 (GA).
    url: str = "wss://api.openai.com/v1"
    api_version: str = "2025-04-01-preview"  # Azure preview only
    credentials: list[Credential] = Field(min_length=1)
    # Models this upstream serves; empty means any. Azure: the deployment names.
    models: list[str] = Field(default_factory=list)
    # Which protocol the upstream speaks; default follows the kind (Azure preview: beta).
    protocol: Literal["ga", "beta"] | None = None

    @property
    def speaks(self) -> Literal["ga", "beta"]:
        if self.protocol is not None:
            return self.protocol
        return "beta" if self.kind is UpstreamKind.AZURE_PREVIEW else "ga"


class TenantLimits(BaseModel):
    """Limits of one tenant. ``None`` means unlimited. Defaults come from ``Settings``."""

    max_concurrent_sessions: int | None = Field(default=None, ge=0)
    tokens_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)
    # Responses per UTC day (what rate_limits.updated calls "requests").
    requests_per_day: int | None = Field(default=None, ge=0)
    audio_seconds_per_day: float | None = Field(default=None, ge=0)
    max_session_seconds: float | None = Field(default=None, gt=0)
    idle_timeout_seconds: float | None = Field(default=None, gt=0)
    max_token_ttl_seconds: int = Field(default=7200, ge=10, le=7200)


class ModelPrice(BaseModel):
    """USD per one million tokens, by token class."""

    input_text: float = 0.0
    input_audio: float = 0.0
    cached_text: float = 0.0
    cached_audio: float = 0.0
    output_text: float = 0.0
    output_audio: float = 0.0


def _default_prices() -> dict[str, ModelPrice]:
    # Published list prices (USD per 1M tokens) of the GA realtime models; operators override.
    gpt_realtime = ModelPrice(
        input_text=4.0,
        input_audio=32.0,
        cached_text=0.4,
        cached_audio=0.4,
        output_text=16.0,
        output_audio=64.0,
    )
    mini = ModelPrice(
        input_text=0.6,
        input_audio=10.0,
        cached_text=0.06,
        cached_audio=0.3,
        output_text=2.4,
        output_audio=20.0,
    )
    return {"gpt-realtime": gpt_realtime, "gpt-realtime-mini": mini}


class BootstrapTenant(BaseModel):
    """A tenant created at start if it does not exist yet (its key is given, not generated)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = ""
    api_key: SecretStr
    models: list[str] = Field(default_factory=list)
    limits: TenantLimits = Field(default_factory=TenantLimits)


class QuotaFailMode(enum.StrEnum):
    """What a decision does while Redis is unreachable."""

    OPEN = "open"  # let the session go on / in; charges are buffered and written later
    CLOSED = "closed"  # refuse what needs a fresh decision


class LogFormat(enum.StrEnum):
    JSON = "json"
    TEXT = "text"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        extra="forbid",
        validate_default=True,
    )

    # --- listening ---------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Externally visible base URL for the quick start text (scheme://host:port); derived if unset.
    public_url: str | None = None

    # --- state -------------------------------------------------------------------------------
    # Unset: the embedded in-process store (one replica only). redis://, rediss://, or a
    # comma-separated list of cluster nodes with redis_cluster=true.
    redis_url: SecretStr | None = None
    redis_cluster: bool = False
    # Set to the monitored master's name to reach Redis through Sentinel: redis_url then lists
    # the sentinels (redis://host:26379,host2:26379).
    redis_sentinel_master: str | None = None
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    replica_id: str = Field(default_factory=lambda: socket.gethostname()[:48] or "replica")
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    # A replica whose heartbeat is older than this is dead; its leases are reaped.
    heartbeat_ttl_seconds: float = Field(default=6.0, gt=0)

    # --- secrets -----------------------------------------------------------------------------
    admin_key: SecretStr | None = None
    # Server-side pepper for hashing tenant keys and tokens (HMAC-SHA256). Generate one and keep
    # it stable across replicas; without it a fixed value is used (and a warning logged).
    hash_secret: SecretStr | None = None

    # --- upstreams ---------------------------------------------------------------------------
    # Shorthand for one upstream with one credential; `upstreams` (JSON) for more.
    upstream_kind: UpstreamKind | None = None
    upstream_url: str | None = None
    upstream_api_key: SecretStr | None = None
    upstream_api_version: str = "2025-04-01-preview"
    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # Built-in simulator used when no upstream is configured.
    sim_speed: float = Field(default=1.0, ge=0)
    sim_refuse_beta: bool = True

    # --- tokens ------------------------------------------------------------------------------
    token_default_ttl_seconds: int = Field(default=60, ge=10, le=7200)
    token_default_max_uses: int = Field(default=1, ge=1, le=1000)
    # Tenant records are cached this long per replica (minting and admission read them on every
    # call). Changes reach other replicas at once over the control channel; this bounds how
    # long a lost message can keep a disabled tenant or a rotated key working. 0: no cache.
    tenant_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # How stale a tenant's budget counters may be on one replica (the replica's own charges
    # count at once; other replicas' within this time). 0: read Redis at every check.
    quota_cache_seconds: float = Field(default=0.25, ge=0, le=10)
    # The upstream's rate-limit figures are written to Redis at most this often per credential
    # per replica (the latest win); 0 writes every one.
    rate_limits_write_seconds: float = Field(default=0.1, ge=0, le=10)

    # --- default tenant limits and policy ----------------------------------------------------
    default_models: list[str] = Field(default_factory=list)  # empty: any model
    default_max_concurrent_sessions: int | None = Field(default=100, ge=0)
    default_tokens_per_minute: int | None = Field(default=None, ge=0)
    default_tokens_per_day: int | None = Field(default=None, ge=0)
    default_requests_per_day: int | None = Field(default=None, ge=0)
    default_audio_seconds_per_day: float | None = Field(default=None, ge=0)
    default_max_session_seconds: float | None = Field(default=3600.0, gt=0)
    default_idle_timeout_seconds: float | None = Field(default=600.0, gt=0)
    # Below this fraction of tokens left, a credential takes no new sessions until its reset.
    upstream_tokens_floor_fraction: float = Field(default=0.02, ge=0, le=1)
    quota_fail_mode: QuotaFailMode = QuotaFailMode.OPEN
    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)

    # --- bootstrap ---------------------------------------------------------------------------
    tenants: list[BootstrapTenant] = Field(default_factory=list)
    # Create a demo tenant and print its key at start (the quick start).
    demo: bool = False

    # --- relay -------------------------------------------------------------------------------
    max_frame_bytes: int = Field(default=16 * MIB, ge=64 * 1024)
    relay_queue_frames: int = Field(default=256, ge=8)
    # permessage-deflate on the client hop (data_path "asgi" only; the upstream hop never offers
    # it); off by default: audio does not compress, and the CPU does not come back.
    compression: bool = False
    # Who carries the realtime WebSocket: "picows" (a Cython WebSocket implementation, taking the
    # socket from uvicorn after admission: the fast path) or "asgi" (uvicorn + Starlette).
    data_path: Literal["picows", "asgi"] = "picows"

    # --- operations --------------------------------------------------------------------------
    drain_seconds: float = Field(default=25.0, ge=0)
    metrics_tenant_label_cap: int = Field(default=50, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: LogFormat = LogFormat.JSON

    # --- file --------------------------------------------------------------------------------
    config_file: Path | None = None

    @field_validator("replica_id")
    @classmethod
    def _replica_id_is_a_key_part(cls, value: str) -> str:
        cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in value)
        return cleaned[:64] or "replica"

    @model_validator(mode="after")
    def _shorthand_upstream(self) -> Settings:
        if self.upstream_api_key is not None or self.upstream_url is not None:
            if self.upstreams:
                raise ValueError("set either GATEWAY_UPSTREAM_* or GATEWAY_UPSTREAMS, not both")
            if self.upstream_api_key is None:
                raise ValueError("GATEWAY_UPSTREAM_API_KEY is required with GATEWAY_UPSTREAM_URL")
            kind = self.upstream_kind or UpstreamKind.OPENAI
            default_urls = {
                UpstreamKind.OPENAI: "wss://api.openai.com/v1",
                UpstreamKind.SIM: "ws://127.0.0.1:9090/v1",
            }
            url = self.upstream_url or default_urls.get(kind)
            if url is None:
                raise ValueError("GATEWAY_UPSTREAM_URL is required for Azure upstreams")
            self.upstreams = [
                UpstreamConfig(
                    name="default",
                    kind=kind,
                    url=url,
                    api_version=self.upstream_api_version,
                    credentials=[Credential(name="default", api_key=self.upstream_api_key)],
                )
            ]
        names = [u.name for u in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("upstream names must be unique")
        return self

    @property
    def uses_builtin_simulator(self) -> bool:
        return not self.upstreams

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _JsonFileSource(settings_cls))


class _JsonFileSource(PydanticBaseSettingsSource):
    """Reads ``GATEWAY_CONFIG_FILE`` (JSON object of the same field names, lower case)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("GATEWAY_CONFIG_FILE")
        if not path:
            return {}
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read GATEWAY_CONFIG_FILE {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"GATEWAY_CONFIG_FILE {path} must hold a JSON object")
        return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and the config file), with explicit overrides on top."""
    return Settings(**overrides)
