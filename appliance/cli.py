"""`appliance` command line: one subcommand per job, each a thin call into its module."""

from __future__ import annotations

import argparse
import json
import sys


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
    from appliance.planner import plan
    from appliance.planner_report import print_plan

    result = plan(_hardware(args))
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
    from appliance.models.store import fetch
    from quantization.catalog import load_catalog

    model = load_catalog().get(args.model)
    if model is None:
        print(f"unknown model: {args.model}", file=sys.stderr)
        return 2
    artifact = model.artifact(args.quant) if args.quant else model.artifacts[0]
    if artifact is None:
        print(f"{model.name} has no {args.quant} artifact", file=sys.stderr)
        return 2
    print(fetch(model, artifact))
    return 0


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
    f.set_defaults(func=_cmd_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
