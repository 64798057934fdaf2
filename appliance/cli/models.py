"""`appliance import`, `appliance models`, `appliance rm`: bring a GGUF in, list what is
installed, remove it. Registered on the top-level parser by `add_parser`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from appliance.models.manifest import Installed
from appliance.units import MiB, gib


def add_parser(sub: Any) -> None:
    """Register `import`, `models` and `rm` on the top-level CLI's subparsers."""
    i = sub.add_parser("import", help="make any GGUF file a servable model (read its header, copy it in)")
    i.add_argument("file", type=Path)
    i.add_argument("--name", help="model name to serve it under (default: the file name, lowercased)")
    i.add_argument("--copy", action="store_true", help="copy even where a hard link would do")
    i.set_defaults(func=cmd_import)

    m = sub.add_parser("models", help="installed models: name, quant, size, source, hash, last used")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    r = sub.add_parser("rm", help="remove an installed model (all its quants unless :QUANT is given)")
    r.add_argument("model", help="MODEL or MODEL:QUANT, as `appliance models` lists it")
    r.add_argument("--yes", "-y", action="store_true", help="do not ask")
    r.add_argument("--config", type=Path, help="YAML settings (the port of a running appliance)")
    r.set_defaults(func=cmd_rm)


def cmd_import(args: argparse.Namespace) -> int:
    from appliance.models.imports import ImportFailed, Placement, import_gguf

    try:
        rec = import_gguf(args.file, args.name, placement=Placement(copy=args.copy), log=_err)
    except ImportFailed as e:
        _err(f"error: {e}")
        return 2
    spec = rec.spec or {}
    arch = spec.get("arch", {})
    print(
        f"imported {rec.name} ({rec.quant}, {gib(rec.size)}): {spec.get('family')}, "
        f"{spec.get('params_total', 0) / 1e9:.2f}B params, {arch.get('n_layers')} layers, "
        f"context {spec.get('context_native')}, tool calls {spec.get('tool_call_format')}"
    )
    print(f"serve it: appliance serve --model {rec.name}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from appliance.models.inventory import installed_models

    records = sorted(installed_models(), key=lambda r: (r.name.lower(), r.quant.lower()))
    if args.json:
        print(json.dumps([_row(r) for r in records], indent=2))
        return 0
    if not records:
        print("no models installed; `appliance import FILE.gguf` or `appliance fetch MODEL`")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for col in ("model", "quant", "size", "source", "sha256", "last used"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for r in records:
        sha = (r.files[0].sha256 or "")[:12] if len(r.files) == 1 else _shards_hashed(r)
        table.add_row(r.name, r.quant, _size(r.size), r.source, sha or "-", _when(r.last_used))
    Console().print(table)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.models.removal import RemoveRefused, check_not_served, find, remove

    records = find(args.model)
    if not records:
        _err(f"error: {args.model} is not installed (`appliance models` lists what is)")
        return 2
    try:
        cfg = load_config(args.config, {})
        api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        check_not_served(records, cfg.port, api_key)
    except (ConfigError, RemoveRefused) as e:
        _err(f"error: {e}; nothing removed")
        return 1
    what = ", ".join(f"{r.name}:{r.quant} ({_size(r.size)})" for r in records)
    if not args.yes:
        if not sys.stdin.isatty():
            _err(f"error: would remove {what}; not a terminal to ask on: pass --yes")
            return 2
        if input(f"remove {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    remove(records)
    print(f"removed {what}")
    return 0


def _row(r: Installed) -> dict[str, Any]:
    return {
        "name": r.name,
        "quant": r.quant,
        "format": r.format,
        "size_bytes": r.size,
        "source": r.source,
        "sha256": [f.sha256 for f in r.files] if len(r.files) > 1 else r.files[0].sha256,
        "path": str(r.path),
        "intact": r.intact(),
        "installed_at": r.installed_at,
        "last_used": r.last_used,
    }


def _shards_hashed(r: Installed) -> str:
    hashed = sum(1 for f in r.files if f.sha256)
    return f"{hashed}/{len(r.files)} files" if hashed else ""


def _size(n: int) -> str:
    return gib(n) if n >= 1024 * MiB else f"{n / MiB:.0f} MiB"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"


def _err(message: str) -> None:
    print(message, file=sys.stderr)
