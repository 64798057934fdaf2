"""Who `appliance serve` lets in, decided once at start: keys, Host names, origins, TLS, limits.

The rule: listening on loopback, nothing else can reach the server, so no key is needed
(unless one is configured). Listening on anything else (`--host 0.0.0.0`, a LAN address)
without a key would serve the whole network silently, so the server refuses to start
unless keys exist or `--insecure-no-auth` says it is meant.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from appliance.api.guard import AccessPolicy, is_loopback, normal_host
from appliance.api.limits import MIB, Limits
from appliance.config import ServeConfig
from appliance.keys import KeyError_, KeyStore

ORIGINS_ENV = "APPLIANCE_ORIGINS"  # comma-separated, like Ollama's OLLAMA_ORIGINS
INSECURE_FLAG = "--insecure-no-auth"


class AccessError(Exception):
    """A setting that makes serving unsafe or impossible; `serve` exits 2 with the message."""


def is_loopback_bind(host: str) -> bool:
    return is_loopback(normal_host(host)) if host else False


def is_wildcard_bind(host: str) -> bool:
    try:
        return ipaddress.ip_address(normal_host(host)).is_unspecified
    except ValueError:
        return host == ""


def server_access(cfg: ServeConfig, keys: KeyStore | None = None) -> AccessPolicy:
    """The policy the API enforces; raises AccessError when the bind needs keys and has none."""
    api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if cfg.api_key_env and not api_key:
        raise AccessError(f"--api-key-env {cfg.api_key_env} is not set")
    keys = keys or KeyStore()
    try:
        have_keys = bool(api_key) or bool(keys.records())
    except KeyError_ as e:
        raise AccessError(str(e)) from None
    local = is_loopback_bind(cfg.host)
    if not local and not have_keys and not cfg.insecure_no_auth:
        raise AccessError(
            f"listening on {cfg.host} would let any machine on the network use this server without a "
            "key. Create one with `appliance keys add NAME` (or pass --api-key-env VAR), or pass "
            f"{INSECURE_FLAG} to serve without keys anyway."
        )
    # Revoking the last key must lock the server, not open it: keys are required beyond
    # loopback, and on loopback once any existed at start.
    require_key = have_keys or (not local and not cfg.insecure_no_auth)
    # Behind a wildcard bind the names clients use (a port-mapped container's host, a DNS
    # alias) cannot be known; there the key, which a rebinding page does not have, protects.
    hosts = {"*"} if require_key and is_wildcard_bind(cfg.host) else _host_names(cfg)
    return AccessPolicy(
        allowed_hosts=frozenset(hosts),
        allowed_origins=frozenset(allowed_origins(cfg)),
        api_key=api_key,
        keys=keys,
        require_key=require_key,
    )


def allowed_origins(cfg: ServeConfig) -> list[str]:
    env = os.environ.get(ORIGINS_ENV, "")
    return [o.strip() for o in [*cfg.allow_origins, *env.split(",")] if o.strip()]


def _host_names(cfg: ServeConfig) -> set[str]:
    """Host header names to answer for besides loopback: the configured ones, the bind
    address, and for a wildcard bind this machine's names and addresses."""
    names = {normal_host(h) for h in cfg.allowed_hosts}
    if not is_wildcard_bind(cfg.host):
        names.add(normal_host(cfg.host))
        return names
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            names.update(a.address.split("%")[0].lower() for a in addrs if a.family in _INET)
    except Exception:  # interface enumeration is best effort; --allowed-host covers the rest
        pass
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(normal_host(name))
    return names


_INET = (socket.AF_INET, socket.AF_INET6)


def request_limits(cfg: ServeConfig) -> Limits:
    if cfg.max_body_mb <= 0:
        raise AccessError("--max-body-mb must be positive")
    return Limits(max_body_bytes=int(cfg.max_body_mb * MIB))


def tls_options(cfg: ServeConfig) -> dict[str, Any]:
    """uvicorn's ssl_certfile/ssl_keyfile, after checking both are given and readable."""
    if not cfg.tls_cert and not cfg.tls_key:
        return {}
    if not (cfg.tls_cert and cfg.tls_key):
        raise AccessError("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", cfg.tls_cert), ("--tls-key", cfg.tls_key)):
        if not Path(path).is_file():
            raise AccessError(f"{flag} {path}: no such file")
    return {"ssl_certfile": cfg.tls_cert, "ssl_keyfile": cfg.tls_key}
