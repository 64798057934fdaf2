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
from appliance.api.console import ServeFacts
from appliance.config import ConfigError, ServeConfig
from appliance.hardware.types import Hardware
from appliance.models.inventory import known_models
from appliance.profiles import machine
from appliance.serve.access import AccessError, request_limits, server_access, tls_options
from appliance.serve.choice import LoadSpec, ServeError, decide, decide_one, pinned_repo
from appliance.serve.facts import machine_facts, model_facts
from appliance.serve.malloc import limit_arenas
from appliance.serve.obtain import obtain, pull_pinned
from appliance.serve.residency import Residency, room_left
from appliance.serve.routing import build_routing, describe_routing
from appliance.serve.shutdown import draining_server, exit_cleanly_on_sigterm
from runtimes.base import Runtime

console = Console(stderr=True, soft_wrap=True)  # whole lines in logs; a terminal wraps


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
    console.print(message, style="dim", markup=False)


def _failure(e: Exception) -> str:
    from appliance.models.hub_errors import PullError

    if isinstance(e, ServeError):
        return str(e)
    return f"could not get the model: {e}" if isinstance(e, PullError) else f"loading failed: {e}"


def _red(message: str) -> None:
    console.print(message, style="bold red", markup=False)


def serve(cfg: ServeConfig) -> int:
    import uvicorn

    exit_cleanly_on_sigterm()  # a supervisor's stop ends in status 0 after the drain
    limit_arenas()  # before any thread starts (serve/malloc.py)
    try:  # before anything slow: an unsafe bind or a bad setting stops here (exit 2)
        access, limits, tls = server_access(cfg), request_limits(cfg), tls_options(cfg)
    except AccessError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    hw = machine(cfg.profile)
    first_pull = pinned_repo(cfg)  # a hub repo outside the catalog: pulled before it is planned
    try:
        specs = [] if first_pull else decide(cfg, hw)
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
    routing.on_demand = residency = _residency(cfg, hw, registry)
    facts = ServeFacts(  # what the console at / shows about the machine and each model's plan
        machine=machine_facts(hw),
        plans=lambda: {r.runtime.id: model_facts(r.spec) for r in residency.residents()},
    )
    app = create_app(
        registry, close_runtimes_on_shutdown=True, routing=routing, access=access, limits=limits,
        facts=facts,
    )
    server = draining_server(  # the grace's end: running streams get an error event, not a cut
        uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                       timeout_graceful_shutdown=cfg.shutdown_grace_s, **tls)
    )
    failed: list[BaseException] = []

    def load_all() -> None:
        try:
            planned = pull_pinned(first_pull, cfg, hw, registry, _dim) if first_pull else specs
            chosen = obtain(planned, cfg, hw, registry, log=_dim, alert=_red)
            for spec in chosen:
                vllm = spec.runtime == "vllm"  # it serves a Hugging Face checkpoint, not the GGUF
                console.print(
                    f"loading [bold]{spec.model.name}[/] {'with vLLM' if vllm else spec.artifact.quant} "
                    f"as '{spec.role}': ctx {spec.n_ctx}, {spec.slots} slots"
                    + ("" if vllm else f", KV {spec.kv_type}")
                )
                runtime = load_runtime(spec, cfg, hw)
                registry.add(runtime, roles=[spec.role])
                residency.adopt(spec, runtime)
        except Exception as e:  # a failed load must stop the server, not leave it 503 forever
            failed.append(e)
            _red(f"error: {_failure(e)}")
            server.should_exit = True
            return
        registry.loading = False
        _print_ready(cfg, chosen)
        for spec in chosen:
            if spec.passed_over:
                _red(f"not the planned model: {spec.passed_over}")

    threading.Thread(target=load_all, name="loader", daemon=True).start()
    scheme = "https" if tls else "http"
    console.print(f"listening on {scheme}://{cfg.host}:{cfg.port} (health: 503 until the model is loaded)")
    console.print(f"router: {describe_routing(routing)}")
    asyncio.run(server.serve())
    return 1 if failed else 0


def _residency(cfg: ServeConfig, hw: Hardware, registry: ModelRegistry) -> Residency:
    """Models beyond the planned ones, loaded when a request names them, in the room the
    resident models leave on the machine serve planned for."""
    return Residency(
        registry,
        lambda name, held: decide_one(cfg, hw, room_left(hw, held), name),
        lambda spec: load_runtime(spec, cfg, hw),
        idle_unload_s=cfg.idle_unload_s,
        load_wait_s=cfg.load_wait_s,
        max_loaded=cfg.max_loaded_models,
    )


def _print_ready(cfg: ServeConfig, specs: list[LoadSpec]) -> None:
    base = f"http://{cfg.host}:{cfg.port}/v1"
    console.print(f"[bold green]ready[/]: OpenAI-compatible API at [bold]{base}[/]")
    for spec in specs:
        console.print(f"  {spec.role}: {spec.model.name} ({spec.reason})")
    console.print(
        "point OpenCode at it: `appliance connect opencode --dir YOUR_PROJECT`, "
        f"or any OpenAI client with base_url={base} and any api key"
    )
