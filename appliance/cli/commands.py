"""The subcommands: each a thin call into the module that does the job, imported on use so
`appliance --help` stays fast."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_detect(args: argparse.Namespace) -> int:
    from appliance.hardware.detect import detect
    from appliance.hardware.report import print_hardware

    hw = detect()
    if args.json:
        print(hw.model_dump_json(indent=2))
    else:
        print_hardware(hw)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from appliance.planner import assume_downloadable, plan
    from appliance.planner.report import print_plan
    from appliance.profiles import machine

    # A profile is a machine we are not on: what this box has downloaded says nothing about it.
    available = assume_downloadable if args.profile else None
    result = plan(machine(args.profile), available=available)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print_plan(result)
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from appliance.profiles import list_profiles

    for name in list_profiles():
        print(name)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
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


def cmd_serve(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.serve import serve

    overrides = {k: getattr(args, k) for k in (
        "host", "port", "model", "quant", "ctx", "slots", "kv_type", "threads", "small_model", "profile",
        "api_key_env", "runtime", "model_dir", "vllm_command",
        "insecure_no_auth", "allowed_hosts", "allow_origins", "tls_cert", "tls_key", "max_body_mb",
    )}
    if args.no_prefix_store:
        overrides["prefix_store"] = False
    if args.no_pull:
        overrides["pull"] = False
    overrides["air_gapped"] = args.air_gapped
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return serve(cfg)


def cmd_convert(args: argparse.Namespace) -> int:
    from appliance.models.convert import convert_model
    from appliance.models.store import ModelNotAvailable
    from runtimes.vllm.convert import ConvertError

    try:
        print(convert_model(args.model, args.quant, args.out, args.python))
    except (ConvertError, ModelNotAvailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.serve.routing import cloud_prices, usage_db_path
    from appliance.usage.report import print_usage, summarize

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


def cmd_route(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.router.cli import main as route_main

    try:
        router = load_config(args.config, {}).router
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threshold = args.threshold if args.threshold is not None else router.tier_threshold
    return route_main(router.privacy_patterns, threshold)


def cmd_connect(args: argparse.Namespace) -> int:
    from appliance.cli.connect import connect_opencode

    return connect_opencode(args.url, args.dir)
