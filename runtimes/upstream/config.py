"""Cloud provider configuration: who to call, with which key variable, for which models, at what price.

Providers are listed in fallback order. Each maps the model names clients use (and
the router picks) to the provider's own model id, with a price for the spend log
and the context size for the router's capacity check. Keys are never in the config,
only the names of the environment variables that hold them, read once at startup.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from runtimes.base import Usage

log = logging.getLogger("appliance.cloud")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Config):
    """USD per million tokens. `cached_input`: prompt tokens read from the provider's cache
    (a tenth of `input` at Anthropic, half at OpenAI); unset, they cost `input`."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        fresh = usage.prompt_tokens - cached
        return (
            fresh * self.input + cached * cached_price + usage.completion_tokens * self.output
        ) / 1_000_000


class CloudModel(_Config):
    upstream: str  # the model id the provider knows
    price: Price | None = None
    context: int = Field(default=0, ge=0)  # tokens; 0: unknown
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"


class ProviderConfig(_Config):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    kind: Literal["openai", "anthropic"]
    base_url: str  # openai: up to /v1 (as the openai SDK takes it); anthropic: without /v1
    api_key_env: str | None = None
    models: dict[str, CloudModel]
    timeout_s: float = Field(default=120.0, gt=0)  # longest silence inside a stream
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Longest wait for the first event (status line and first SSE frame): a provider that accepts
    # the connection and says nothing is given up on after this, not retried, and the next
    # provider (or the local model) answers instead.
    first_byte_timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)  # extra attempts at this provider
    headers: dict[str, str] = Field(default_factory=dict)  # non-secret extras (anthropic-beta, ...)

    @field_validator("models", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`name: upstream-id` is short for `name: {upstream: upstream-id}`."""
        if isinstance(value, Mapping):
            return {k: {"upstream": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        banned = {"authorization", "x-api-key", "api-key"}
        if banned & {k.lower() for k in value}:
            raise ValueError("put keys in the variable named by api_key_env, not in headers")
        return value


class CloudConfig(_Config):
    providers: list[ProviderConfig] = Field(default_factory=list)  # in fallback order
    cooldown_after: int = Field(default=3, ge=1)  # consecutive failures that bench a provider
    cooldown_s: float = Field(default=60.0, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    seed: int | None = None  # jitter seed, for reproducible retry timing in tests

    @model_validator(mode="after")
    def _unique_names(self) -> CloudConfig:
        names = [p.name for p in self.providers]
        if len(names) != len(set(names)):
            raise ValueError(f"provider names must be unique: {names}")
        return self

    def model_names(self) -> list[str]:
        """Every cloud model name, in the order first configured."""
        seen: dict[str, None] = {}
        for p in self.providers:
            seen.update(dict.fromkeys(p.models))
        return list(seen)

    def lookup(self, name: str) -> list[tuple[ProviderConfig, CloudModel]]:
        """Providers serving `name` (case-insensitive), in fallback order."""
        wanted = name.lower()
        out = []
        for p in self.providers:
            for model_name, model in p.models.items():
                if model_name.lower() == wanted:
                    out.append((p, model))
                    break
        return out

    @classmethod
    def from_yaml(cls, path: Path) -> CloudConfig:
        """A file holding either the cloud section itself or `{cloud: {...}}`."""
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and "cloud" in data:
            data = data["cloud"] or {}
        return cls.model_validate(data)


def load_keys(config: CloudConfig, environ: Mapping[str, str] | None = None) -> dict[str, SecretStr | None]:
    """Each provider's key from its variable, read now. A missing variable is logged by NAME
    (never a value) and leaves that provider without a key."""
    env = os.environ if environ is None else environ
    keys: dict[str, SecretStr | None] = {}
    for p in config.providers:
        value = env.get(p.api_key_env) if p.api_key_env else None
        if p.api_key_env and not value:
            log.warning(
                "cloud provider %s: variable %s is not set; it will be skipped", p.name, p.api_key_env
            )
        keys[p.name] = SecretStr(value) if value else None
    return keys
