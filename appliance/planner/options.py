"""The options per model: which runtime and placement of each artifact is worth fitting for a
role on this budget (llama.cpp on the GPU or CPU, vLLM on NVIDIA, MoE experts or a dense model's first
layers in RAM), and why a
model or artifact is ruled out before any fitting."""

from __future__ import annotations

from appliance.planner.fit import reject
from appliance.planner.needs import MAIN_GOOD_CTX, MAIN_MIN_CTX, SMALL_MAX_PARAMS
from appliance.planner.types import Budget, Candidate, Option, Rejection, Role
from appliance.units import kilo
from quantization import formats
from quantization.catalog import Artifact, ModelSpec


def _role_rejection(model: ModelSpec, role: Role) -> str | None:
    caps = set(model.capabilities)
    if "chat" not in caps:
        return "base model, not instruction-tuned: it cannot follow a chat"
    if role == "main" and "tools" not in caps:
        return "no tool calling: a coding agent works through tool calls"
    if role == "main" and model.context_native < MAIN_MIN_CTX:
        return f"native context {kilo(model.context_native)} cannot hold an agent's ~8k-token prompt"
    return None


def is_small(model: ModelSpec, main: Candidate | None, catalog_main: ModelSpec | None) -> bool:
    """A side-task model: small, and well below the main model (else main serves side tasks)."""
    if model.params_total > SMALL_MAX_PARAMS:
        return False
    if main is None or catalog_main is None:
        return True
    return model.name != main.model and model.params_total <= catalog_main.params_total / 2


def options(
    model: ModelSpec, role: Role, budget: Budget, main: Candidate | None = None
) -> tuple[list[Option], list[Rejection]]:
    """Every runtime/placement worth fitting for this model and role, or why not."""
    if why := _role_rejection(model, role):
        return [], [Rejection(role=role, model=model.name, quality=model.quality, kind="role", reason=why)]
    opts: list[Option] = []
    rejected: list[Rejection] = []
    for a in model.artifacts:
        if a.format == "gguf":
            opts += _gguf_options(model, a, role, budget, main)
        elif role == "main" and budget.vllm_tp:
            got = _vllm_option(model, a, budget)
            (opts if isinstance(got, Option) else rejected).append(got)
    return opts, rejected


def _gguf_options(
    model: ModelSpec, a: Artifact, role: Role, budget: Budget, main: Candidate | None
) -> list[Option]:
    if budget.backend == "cpu":
        return [Option(model, a, "llama.cpp", "cpu", "cpu")]
    out = [Option(model, a, "llama.cpp", "gpu", budget.backend)]
    # A side-task model may sit in system RAM, unless main's experts already need its bandwidth.
    if (
        role == "small"
        and not budget.unified
        and budget.ram_bytes
        and (main is None or main.placement == "gpu")
    ):
        out.append(Option(model, a, "llama.cpp", "cpu", "cpu"))
    return out


def _vllm_option(model: ModelSpec, a: Artifact, budget: Budget) -> Option | Rejection:
    opt = Option(model, a, "vllm", "gpu", "cuda", tp=budget.vllm_tp)
    cc = budget.compute_capability
    support = formats.supported(a.format, "vllm", cc, "cuda")
    if not support:
        return reject(opt, "main", support.reason)
    if a.format == "fp8" and support.mode != "w8a8":
        return reject(
            opt,
            "main",
            f"FP8 W8A8 needs compute capability >= {formats.FP8_W8A8_MIN_CC} "
            f"(Ada/Hopper); cc {cc} only gets FP8 weights through Marlin, no FP8 compute",
        )
    arch, tp = model.arch, budget.vllm_tp
    if tp > 1 and (arch.n_heads % tp or (arch.n_kv_heads % tp and tp % arch.n_kv_heads)):
        return reject(opt, "main", f"tensor parallel {tp} needs attention heads divisible by {tp}")
    return opt


def experts_in_ram(model: ModelSpec, budget: Budget, got: list[Candidate | Rejection]) -> list[Option]:
    """MoE on a small GPU: attention, shared weights and KV on the GPU, routed experts in RAM, when
    the GPU alone cannot reach a usable context. Every layer's experts in RAM here; `fit.place_experts`
    brings back to VRAM as many layers as the room allows."""
    if not model.is_moe or not _needs_ram(model, budget, got):
        return []
    return [
        Option(model, a, "llama.cpp", "gpu+ram", budget.backend, n_cpu_moe=model.arch.n_layers)
        for a in model.artifacts
        if a.format == "gguf"
    ]


def layers_in_ram(model: ModelSpec, budget: Budget, got: list[Candidate | Rejection]) -> list[Option]:
    """A dense model on a small GPU: its first blocks (and their KV) in RAM, the rest on the GPU, when
    the GPU alone cannot reach a usable context. No layer on the GPU here; `layers.place_layers`
    puts there as many as the room allows."""
    if model.is_moe or not _needs_ram(model, budget, got):
        return []
    return [
        Option(model, a, "llama.cpp", "gpu+ram", budget.backend, n_gpu_layers=0)
        for a in model.artifacts
        if a.format == "gguf"
    ]


def _needs_ram(model: ModelSpec, budget: Budget, got: list[Candidate | Rejection]) -> bool:
    """A discrete GPU with RAM beside it, and no plan of the model on the GPU alone reaching a usable
    context: only then is a split worth its RAM-speed reads (unified memory has no second pool).
    Nothing tried (`got` empty): the model is unfit for the role, not too big."""
    if not got or budget.backend not in ("cuda", "rocm") or not budget.ram_bytes:
        return False
    usable = min(MAIN_GOOD_CTX, model.context_native)
    return not any(isinstance(c, Candidate) and c.n_ctx >= usable for c in got)
