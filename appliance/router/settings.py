"""The `router:` section of the config file: air-gap, bounds, patterns, pins, budget.

Every field has a default so a config without a `router:` section keeps today's
behaviour: local only until a cloud provider is configured.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PinRule(BaseModel):
    """One policy rule pinning matching requests to local; every field set must match.

    project: a path prefix of the client's project (header `x-appliance-project`, or
    the `Working directory:` agents such as OpenCode put in their system prompt).
    api_key_sha256: sha256 hex of the key the client sends (keys are never stored).
    model: a model name or alias as the client sends it.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = ""  # shown in the reason: `policy:<name>`
    project: str | None = None
    api_key_sha256: str | None = None
    model: str | None = None

    @field_validator("api_key_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("api_key_sha256 must be 64 hex digits (printf %s KEY | sha256sum)")
        return v.lower() if v else v

    def label(self) -> str:
        if self.name:
            return self.name
        return "project" if self.project else "api_key" if self.api_key_sha256 else "model"


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    air_gapped: bool = False
    # Air-gapped: refuse (4xx) a request the tier classifier sends to the cloud, rather than
    # answer it with the weaker local model. Capacity overflow is always refused.
    air_gapped_refuse_tier: bool = True
    # A request whose estimated wait for a local slot exceeds this goes to the cloud (429 with
    # Retry-After when it may not); so does one that finds max_queue requests already waiting
    # (None: 4 per slot of the local model). capacity.py.
    queue_wait_bound_s: float = 30.0
    max_queue: int | None = Field(default=None, ge=0)
    # A request admitted to the queue that has still no slot after this long gets a 503
    # queue_timeout with Retry-After (the estimate above can be wrong: a long generation ahead).
    queue_timeout_s: float | None = Field(default=600.0, gt=0)
    # Tier score at or above which a request counts as reasoning-tier (None: the classifier's own).
    tier_threshold: float | None = None
    # Extra privacy patterns {name: regex} on top of the built-in secret detectors.
    privacy_patterns: dict[str, str] = Field(default_factory=dict)
    pin_local: list[PinRule] = Field(default_factory=list)
    # A YAML file holding more pin rules (a list of PinRule mappings), e.g. kept by security.
    policy_file: str | None = None
    # USD per UTC day of cloud spend; once reached, requests stay local. None: no limit.
    daily_budget_usd: float | None = None
    # The cloud model used when the router (not the client) picks the cloud.
    default_cloud_model: str | None = None
    # The cloud model whose prices value local tokens in `appliance usage` ("all-cloud" cost).
    reference_cloud_model: str | None = None
    # Agent sessions remembered for sticky routing.
    sticky_sessions: int = 4096

    @field_validator("privacy_patterns")
    @classmethod
    def _compiles(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"privacy pattern {name!r} is not a valid regex: {e}") from e
        return v
