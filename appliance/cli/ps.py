"""`appliance ps` and `appliance unload MODEL`: ask the running appliance (the configured port,
with the configured key if any) which models it holds in memory, or to let one go.
Registered on the top-level parser by `add_parser`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from appliance.units import gib


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ps", help="models the running appliance holds in memory, where, and how busy")
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", type=Path, help="YAML settings (port, api_key_env)")
    p.set_defaults(func=cmd_ps)
    u = sub.add_parser("unload", help="unload a model from the running appliance (not while it answers)")
    u.add_argument("model")
    u.add_argument("--config", type=Path, help="YAML settings (port, api_key_env)")
    u.set_defaults(func=cmd_unload)


def cmd_ps(args: argparse.Namespace) -> int:
    resp = _call(args, "GET", "/api/ps")
    if resp is None:
        return 1
    rows = resp.json().get("models", [])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no model loaded")
    for r in rows:
        print(_line(r))
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    resp = _call(args, "POST", "/api/unload", {"model": args.model})
    if resp is None:
        return 1
    print(f"unloaded {resp.json()['unloaded']}")
    return 0


def _line(r: dict[str, Any]) -> str:
    if r.get("state") != "loaded":
        return f"{r['model']}: {r.get('state')}"
    where = (
        f"GPU {gib(r['gpu_bytes'])} + RAM {gib(r['ram_bytes'])}"
        if r.get("gpu_bytes")
        else f"RAM {gib(r['ram_bytes'])}"
    )
    if r.get("n_cpu_moe"):
        where += f" (experts of {r['n_cpu_moe']} layers in RAM)"
    if r.get("n_gpu_layers", -1) >= 0 and r.get("gpu_bytes"):
        where += f" (-ngl {r['n_gpu_layers']}: the first layers in RAM)"
    roles = f" [{', '.join(r['roles'])}]" if r.get("roles") else ""
    until = "kept" if r.get("unload_in_s") is None else f"unloads in {r['unload_in_s']:.0f} s if idle"
    return (
        f"{r['model']} {r['quant']}{roles}: {r['runtime']}, {where}, ctx {r['context']}, "
        f"slots {r['slots_busy']}/{r['slots_total']} busy, queue {r['queue_depth']}, "
        f"idle {r['idle_s']:.0f} s, {until}"
    )


def _call(
    args: argparse.Namespace, method: str, path: str, body: dict | None = None
) -> httpx.Response | None:
    from appliance.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, {})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"http://127.0.0.1:{cfg.port}{path}"
    try:
        resp = httpx.request(method, url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError:
        print(
            f"error: no appliance answers on 127.0.0.1:{cfg.port} (`appliance serve` starts one)",
            file=sys.stderr,
        )
        return None
    if resp.status_code != 200:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:200]
        print(f"error: {message}", file=sys.stderr)
        return None
    return resp
