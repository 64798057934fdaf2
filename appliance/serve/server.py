"""`appliance serve`: detect, plan, fetch, load, listen — with no configuration needed.

The HTTP server starts first and answers /health with 503 while the model loads,
so supervisors and agents can wait on it instead of getting refused connections.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass

from rich.console import Console

from appliance.config import ServeConfig
from appliance.hardware.types import Hardware
from quantization.catalog import Artifact, ModelSpec, load_catalog

console = Console(stderr=True)


@dataclass
class LoadSpec:
    """Everything needed to load one model, decided before any weight is read."""

    role: str  # "default" or "small"
    model: ModelSpec
    artifact: Artifact
    n_ctx: int
    slots: int
    kv_type: str
    reason: str
    runtime: str = "llama.cpp"  # or "vllm" (a supervised child; appliance/serve_vllm.py)
    tensor_parallel: int = 1
    gpu_bytes: int = 0  # what the plan puts on the GPU for it
    reserve_gpu_bytes: int = 0  # vLLM: GPU memory the rest of the plan loads after it


class ServeError(Exception):
    pass


def _hardware(cfg: ServeConfig) -> Hardware:
    if cfg.profile:
        from appliance.profiles import load_profile

        return load_profile(cfg.profile)
    from appliance.hardware.detect import detect

    return detect()


SERVABLE_RUNTIMES = {"llama.cpp", "vllm"}


def decide(cfg: ServeConfig, hw: Hardware) -> list[LoadSpec]:
    """Turn the planner's ranking (and the user's pins) into what to load, main model first."""
    from appliance.planner import plan

    result = plan(hw)
    ranked = result.candidates.get("main", [])
    if cfg.runtime == "vllm":  # a forced vLLM may serve any planned model, side-task ones too
        ranked = ranked + result.candidates.get("small", [])
    main = _choose("default", cfg.model, ranked, cfg)
    if main is None:
        raise ServeError("no servable model fits this machine; see `appliance plan`")
    specs = [main]
    if (cfg.small_model or "").lower() != "none":
        small = _choose("small", cfg.small_model, result.candidates.get("small", []), None)
        if small is not None and small.model.name != main.model.name:
            specs.append(small)
            main.reserve_gpu_bytes = small.gpu_bytes
    return specs


def _choose(role: str, pinned: str | None, ranked: list, cfg: ServeConfig | None) -> LoadSpec | None:
    """The best-ranked candidate we can serve now, or the pinned model's best plan."""
    catalog = load_catalog()
    forced = cfg.runtime if cfg and cfg.runtime != "auto" else None
    if forced == "vllm":  # any plan of the model sizes it; the checkpoint is checked at load
        servable = list(ranked)
    else:
        servable = [c for c in ranked if c.runtime in SERVABLE_RUNTIMES and c.available]
        servable = [c for c in servable if c.runtime == forced] if forced else servable
    if pinned:
        model = catalog.get(pinned)
        if model is None:
            raise ServeError(f"unknown model {pinned!r}; `appliance plan` lists what fits")
        servable = [c for c in servable if c.model == model.name]
        if not servable:
            raise ServeError(f"{model.name} is not installed or does not fit here; see `appliance plan`")
    if cfg and cfg.quant:
        servable = [c for c in servable if c.quant.lower() == cfg.quant.lower()] or servable
    if not servable:
        return None
    chosen = servable[0]
    model = catalog.get(chosen.model)
    quant = cfg.quant if cfg and cfg.quant else chosen.quant
    artifact = model.artifact(quant)
    if artifact is None:
        raise ServeError(f"{model.name} has no {quant} artifact")
    return LoadSpec(
        role=role,
        model=model,
        artifact=artifact,
        n_ctx=(cfg and cfg.ctx) or chosen.n_ctx,
        slots=(cfg and cfg.slots) or chosen.slots,
        kv_type=(cfg and cfg.kv_type) or chosen.kv_type,
        reason=chosen.reason if not forced or forced == chosen.runtime else f"--runtime {forced}",
        runtime=forced or chosen.runtime,
        tensor_parallel=chosen.tensor_parallel,
        gpu_bytes=chosen.memory.gpu_bytes,
    )


def load_runtime(spec: LoadSpec, cfg: ServeConfig, hw: Hardware):
    if spec.runtime == "vllm":
        from appliance.serve_vllm import load_vllm

        return load_vllm(spec, cfg, hw, log=lambda m: console.print(f"[dim]{m}[/]"))
    from appliance.models.store import fetch
    from appliance.paths import data_dir
    from runtimes.llamacpp.engine import EngineConfig
    from runtimes.llamacpp.runtime import LlamaCppRuntime

    path = fetch(
        spec.model, spec.artifact, log=lambda m: console.print(f"[dim]{m}[/]"),
        air_gapped=cfg.router.air_gapped, mirror=cfg.model_mirror,
    )
    threads = cfg.threads or hw.cpu.physical_cores or os.cpu_count() or 1
    engine_cfg = EngineConfig(
        model_path=path,
        n_ctx=spec.n_ctx,
        n_slots=spec.slots,
        n_threads=threads,
        n_threads_batch=threads,
        kv_type=spec.kv_type,
        n_gpu_layers=-1 if hw.llama_gpu_offload else 0,
        prefix_store_dir=(data_dir() / "prefix-cache" / spec.model.name) if cfg.prefix_store else None,
    )
    return LlamaCppRuntime.load(spec.model, engine_cfg)


def serve(cfg: ServeConfig) -> int:
    import uvicorn

    from appliance.api import ModelRegistry, catalog_resolver, create_app
    from appliance.config import ConfigError
    from appliance.router.build import build_routing, describe_routing

    hw = _hardware(cfg)
    try:
        specs = decide(cfg, hw)
    except ServeError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    registry = ModelRegistry(catalog_resolver(), loading=True)
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
