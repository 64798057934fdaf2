"""The `router:` and `cloud:` sections of the config file, beside (or instead of) `serve:`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appliance.api import ModelRegistry
from appliance.config import ConfigError, load_config
from appliance.serve.routing import build_routing


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sections_beside_serve_and_the_flat_legacy_form(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"serve": {"port": 9001}, "router": {"daily_budget_usd": 3}}), {})
    assert (cfg.port, cfg.router.daily_budget_usd, cfg.router.air_gapped) == (9001, 3.0, False)
    flat = load_config(write(tmp_path, {"port": 9002, "router": {"queue_wait_bound_s": 5}}), {})
    assert (flat.port, flat.router.queue_wait_bound_s) == (9002, 5.0)
    gapped = load_config(write(tmp_path, {"port": 9003}), {"air_gapped": True})  # --air-gapped
    assert gapped.router.air_gapped and gapped.port == 9003


def test_bad_router_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a valid regex"):
        load_config(write(tmp_path, {"router": {"privacy_patterns": {"bad": "(unclosed"}}}), {})
    with pytest.raises(ConfigError, match="api_key_sha256"):
        load_config(write(tmp_path, {"router": {"pin_local": [{"api_key_sha256": "my-plain-key"}]}}), {})


def test_policy_file_pins_and_a_broken_one_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"pin_local": [{"name": "bank", "project": "/srv/bank"}]}))
    cfg = load_config(write(tmp_path, {"router": {"policy_file": str(policy)}}), {})
    routing = build_routing(cfg, ModelRegistry())
    assert [r.name for r in routing.router.pin_rules] == ["bank"]
    policy.write_text("pin_local: [{projekt: /typo}]")
    with pytest.raises(ConfigError, match="policy file"):
        build_routing(cfg, ModelRegistry())
