"""`appliance serve`: detect, plan, fetch, load, listen — with no configuration needed.

This package is the composition root: the only place that knows every layer (planner,
store, runtimes, router, cloud, usage, API) and wires them together.

The HTTP server starts first and answers /health with 503 while the model loads,
so supervisors and agents can wait on it instead of getting refused connections.
"""

from __future__ import annotations

import asyncio
import os
import threading

from rich.console import Console

from appliance.api import ModelRegistry, catalog_resolver, create_app
from appliance.config import ConfigError, ServeConfig
from appliance.hardware.types import Hardware
from appliance.models.inventory import known_models
from appliance.profiles import machine
from appliance.serve.choice import LoadSpec, ServeError, decide
from appliance.serve.routing import build_routing, describe_routing
from runtimes.base import Runtime

console = Console(stderr=True)


def load_runtime(spec: LoadSpec, cfg: ServeConfig, hw: Hardware) -> Runtime:
    """One loader per runtime; the API only ever sees the `Runtime` it returns.

    Imported here, not above: a vLLM-only image need not have llama.cpp's library, nor the
    reverse.
    """
    if spec.runtime == "vllm":
        from appliance.serve.vllm import load_vllm

        return load_vllm(spec, cfg, hw, log=_dim)
    from appliance.serve.llamacpp import load_llamacpp

    return load_llamacpp(spec, cfg, hw, log=_dim)


def _dim(message: str) -> None:
    console.print(f"[dim]{message}[/]")


def serve(cfg: ServeConfig) -> int:
    import uvicorn

    hw = machine(cfg.profile)
    try:
        specs = decide(cfg, hw)
    except ServeError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    registry = ModelRegistry(catalog_resolver(known_models()), loading=True)
    api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if cfg.api_key_env and not api_key:
        console.print(f"[bold red]error:[/] --api-key-env {cfg.api_key_env} is not set")
        return 2
    try:
        routing = build_routing(cfg, registry)
    except ConfigError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    app = create_app(registry, api_key=api_key, close_runtimes_on_shutdown=True, routing=routing)
    server = uvicorn.Server(
        uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    )
    failed: list[BaseException] = []

    def load_all() -> None:
        try:
            for spec in specs:
                vllm = spec.runtime == "vllm"  # it serves a Hugging Face checkpoint, not the GGUF
                console.print(
                    f"loading [bold]{spec.model.name}[/] {'with vLLM' if vllm else spec.artifact.quant} "
                    f"as '{spec.role}': ctx {spec.n_ctx}, {spec.slots} slots"
                    + ("" if vllm else f", KV {spec.kv_type}")
                )
                registry.add(load_runtime(spec, cfg, hw), roles=[spec.role])
        except Exception as e:  # a failed load must stop the server, not leave it 503 forever
            failed.append(e)
            console.print(f"[bold red]error:[/] loading failed: {e}")
            server.should_exit = True
            return
        registry.loading = False
        _print_ready(cfg, specs)
        for spec in specs:
            if spec.passed_over:
                console.print(f"[bold red]not the planned model:[/] {spec.passed_over}")

    threading.Thread(target=load_all, name="loader", daemon=True).start()
    console.print(f"listening on http://{cfg.host}:{cfg.port} (health: 503 until the model is loaded)")
    console.print(f"router: {describe_routing(routing)}")
    asyncio.run(server.serve())
    return 1 if failed else 0


def _print_ready(cfg: ServeConfig, specs: list[LoadSpec]) -> None:
    base = f"http://{cfg.host}:{cfg.port}/v1"
    console.print(f"[bold green]ready[/]: OpenAI-compatible API at [bold]{base}[/]")
    for spec in specs:
        console.print(f"  {spec.role}: {spec.model.name} ({spec.reason})")
    console.print(
        "point OpenCode at it: `appliance connect opencode --dir YOUR_PROJECT`, "
        f"or any OpenAI client with base_url={base} and any api key"
    )
