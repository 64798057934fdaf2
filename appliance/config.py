"""Serve settings: defaults, then the YAML config file, then command-line flags.

Zero-config must work (`appliance serve` on a laptop), so every field has a
default and the planner fills what the user did not pin.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from appliance.paths import data_dir

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
    profile: str | None = None  # plan as if on this hardware profile (testing)
    prefix_store: bool = True  # keep agent prompts' KV on disk so new sessions start warm


class ConfigError(Exception):
    pass


def default_config_path() -> Path:
    return data_dir() / "config.yaml"


def load_config(path: Path | None, overrides: dict) -> ServeConfig:
    """Merge the config file (if any) with non-None command-line overrides."""
    data: dict = {}
    file = path or default_config_path()
    if file.is_file():
        loaded = yaml.safe_load(file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of settings")
        data.update(loaded.get("serve", loaded))
    elif path is not None:
        raise ConfigError(f"config file not found: {path}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid serve settings: {e}") from e
