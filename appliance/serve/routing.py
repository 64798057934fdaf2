"""Assemble the routing for `appliance serve` from the config: router, cloud client, usage log.

In air-gapped mode the cloud client is never constructed (no object that could
open a socket to a provider exists); the router still knows the configured cloud
model names, so a request for one is refused with a reason instead of a 404.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance.api.app import local_lookup
from appliance.api.registry import ModelRegistry
from appliance.api.routing import Routing
from appliance.config import ConfigError, ServeConfig
from appliance.keys import KeyError_, KeyStore
from appliance.paths import data_dir
from appliance.router.decide import CloudSide, Router
from appliance.router.policy import PolicyError, load_rules
from appliance.usage.log import UsageLog
from runtimes.upstream.config import Price

log = logging.getLogger("appliance.serve")


def usage_db_path() -> Path:
    return data_dir() / "usage.sqlite"


def cloud_config(cfg: ServeConfig) -> Any | None:
    """The validated `cloud:` section, or None when it names no provider."""
    if not cfg.cloud:
        return None
    from runtimes.upstream.config import CloudConfig

    try:
        parsed = CloudConfig.model_validate(cfg.cloud)
    except ValidationError as e:
        raise ConfigError(f"invalid cloud settings: {e}") from e
    return parsed if parsed.providers else None


def cloud_prices(cfg: ServeConfig) -> dict[str, Price]:
    """Each cloud model name's price (its first provider's), whole: cached input included."""
    cloud = cloud_config(cfg)
    out: dict[str, Price] = {}
    for provider in cloud.providers if cloud else ():
        for name, model in provider.models.items():
            if model.price is not None:
                out.setdefault(name, model.price)
    return out


def build_routing(cfg: ServeConfig, registry: ModelRegistry) -> Routing:
    from appliance.router.privacy import PrivacyGuard
    from appliance.router.tier import classify, latest_user_text

    settings = cfg.router
    try:
        rules = load_rules(settings)
    except PolicyError as e:
        raise ConfigError(str(e)) from e
    cloud_cfg = cloud_config(cfg)
    names = cloud_cfg.model_names() if cloud_cfg else []
    client = None
    if cloud_cfg is not None and not settings.air_gapped:
        from runtimes.upstream.lean_transport import transport_for_url
        from runtimes.upstream.pool import CloudPool

        client = CloudPool(cloud_cfg, transport_for=lambda p: transport_for_url(p.base_url))
    usage = UsageLog(usage_db_path(), cloud_prices(cfg))
    keys = KeyStore()  # the file serve's access policy reads; re-read when it changes
    side = CloudSide(
        models=frozenset(n.lower() for n in names),
        default_model=names[0] if names else None,
        enabled=client is not None,
    )
    router = Router(
        settings,
        local_for=local_lookup(registry),
        cloud=side,
        classify=classify,
        latest_user_text=latest_user_text,
        guard=PrivacyGuard(settings.privacy_patterns),
        pin_rules=rules,
        budget_ok=lambda: usage.budget_ok(settings.daily_budget_usd),
        key_budget_ok=lambda key: usage.key_budget_ok(key, key_budget(keys, key)),
    )
    return Routing(router=router, cloud=client, usage=usage)


def key_budget(keys: KeyStore, name: str) -> float | None:
    """A key's daily cloud budget; a keys file that cannot be read allows it no cloud spend
    (fail closed) rather than an unlimited one."""
    try:
        return keys.daily_budget(name)
    except KeyError_ as e:
        log.warning("key budgets unreadable, no cloud for keyed requests: %s", e)
        return 0.0


def describe_routing(routing: Routing) -> str:
    """One line for the serve banner (no keys, no URLs with credentials)."""
    s = routing.router.settings
    if s.air_gapped:
        return "air-gapped: local only, no cloud client"
    if routing.cloud is None:
        return "local only (no cloud provider configured)"
    budget = f"{s.daily_budget_usd:.2f} USD/day" if s.daily_budget_usd is not None else "no budget limit"
    return f"local first; cloud models {', '.join(sorted(routing.router.cloud.models))}; {budget}"
