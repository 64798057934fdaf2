"""What `appliance serve` loads: the planner's ranking and the user's pins turned into load specs.

Decided before any weight is read, so a bad pin fails in a second with a clear message
instead of after minutes of downloading or loading.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import ServeConfig
from appliance.hardware.types import Hardware
from appliance.planner import Candidate
from quantization.catalog import Artifact, ModelSpec, load_catalog

# Runtimes this package has a loader for (appliance/serve/llamacpp.py, appliance/serve/vllm.py).
SERVABLE_RUNTIMES = {"llama.cpp", "vllm"}


@dataclass
class LoadSpec:
    """Everything needed to load one model, decided before any weight is read."""

    role: str  # "main" or "small", as the planner names them
    model: ModelSpec
    artifact: Artifact
    n_ctx: int
    slots: int
    kv_type: str
    reason: str
    runtime: str = "llama.cpp"  # or "vllm" (a supervised child; appliance/serve/vllm.py)
    tensor_parallel: int = 1
    gpu_bytes: int = 0  # what the plan puts on the GPU for it
    reserve_gpu_bytes: int = 0  # vLLM: GPU memory the rest of the plan loads after it


class ServeError(Exception):
    pass


def decide(cfg: ServeConfig, hw: Hardware) -> list[LoadSpec]:
    """Turn the planner's ranking (and the user's pins) into what to load, main model first."""
    from appliance.planner import plan

    result = plan(hw)
    ranked = result.candidates.get("main", [])
    if cfg.runtime == "vllm":  # a forced vLLM may serve any planned model, side-task ones too
        ranked = ranked + result.candidates.get("small", [])
    main = _choose("main", cfg.model, ranked, cfg)
    if main is None:
        raise ServeError("no servable model fits this machine; see `appliance plan`")
    specs = [main]
    if (cfg.small_model or "").lower() != "none":
        small = _choose("small", cfg.small_model, result.candidates.get("small", []), None)
        if small is not None and small.model.name != main.model.name:
            specs.append(small)
            main.reserve_gpu_bytes = small.gpu_bytes
    return specs


def _choose(
    role: str, pinned: str | None, ranked: list[Candidate], cfg: ServeConfig | None
) -> LoadSpec | None:
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
