"""`appliance pull TARGET`: a model from the Hugging Face hub (or an internal mirror of it) into
the Hugging Face cache, resumable and sha256-verified, recorded in the store's manifest.
Registered on the top-level parser by `add_parser`.

Which quant, when the target names none: `serve.obtain.machine_preference`, the rule `serve`
uses for its own pulls (the planner's choice for catalog models, a size rule for other repos).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `pull` on the top-level CLI's subparsers."""
    p = sub.add_parser("pull", help="download a model from the Hugging Face hub (resumable, sha256-verified)")
    p.add_argument("target", help="MODEL[:QUANT] (catalog) or [hf.co/]OWNER/REPO[:QUANT] (any GGUF repo)")
    p.add_argument("--quant", help="quant to pull (e.g. Q4_K_M), instead of :QUANT")
    p.add_argument("--revision", default="main", help="branch, tag or commit of the repo (default main)")
    p.add_argument("--air-gapped", action="store_true", help="only an internal mirror (HF_ENDPOINT)")
    p.add_argument("--config", type=Path, help="YAML settings (router.air_gapped, model_mirror)")
    p.set_defaults(func=cmd_pull)


def cmd_pull(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.hardware.detect import detect
    from appliance.models.hub import PullError, pull
    from appliance.serve.obtain import machine_preference

    try:
        cfg = load_config(args.config, {"air_gapped": args.air_gapped})
        rec = pull(
            args.target, quant=args.quant, prefer=machine_preference(detect),
            air_gapped=cfg.router.air_gapped, pip_mirror=cfg.model_mirror, revision=args.revision,
        )
    except (ConfigError, PullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hashed = sum(1 for f in rec.files if f.sha256)
    print(f"{rec.name} {rec.quant}: {rec.path} ({len(rec.files)} files, {hashed} sha256-verified)")
    print(f"serve it: appliance serve --model {rec.name} --quant {rec.quant}")
    return 0
