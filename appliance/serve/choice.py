"""What `appliance serve` loads: the planner's ranking and the user's pins turned into load specs.

Decided before any weight is read, so a bad pin fails in a second with a clear message
instead of after minutes of downloading or loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.config import ServeConfig
from appliance.hardware.types import Hardware
from appliance.models.hub_errors import PullError
from appliance.models.hub_target import Target, parse_target
from appliance.models.imports import ImportFailed, is_gguf_path, register_path
from appliance.models.inventory import known_models
from appliance.models.manifest import Installed
from appliance.models.store import installed, manifest
from appliance.planner import Available, Candidate, Plan
from quantization.catalog import Artifact, Catalog, ModelSpec

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
    ram_bytes: int = 0  # and in system RAM (serve/residency.py counts both while it is loaded)
    reserve_gpu_bytes: int = 0  # vLLM: GPU memory the rest of the plan loads after it
    n_cpu_moe: int = 0  # llama.cpp: the first N layers' routed experts in system RAM (the plan's split)
    n_gpu_layers: int = -1  # llama.cpp's -ngl: -1 all; a dense model's split: the output + last N-1 blocks
    # The plan's first choice when it is not installed and this one is served instead: the
    # banner says so in red with the command that gets it (never a silent smaller model).
    passed_over: str | None = None
    # Not on disk yet: the `appliance pull` target that gets it before loading (serve/obtain.py).
    pull: str | None = None


class ServeError(Exception):
    pass


def decide(cfg: ServeConfig, hw: Hardware) -> list[LoadSpec]:
    """Turn the planner's ranking (and the user's pins) into what to load, main model first.

    With `cfg.pull` the plan counts what the hub has as obtainable, so the planned model is
    chosen even when it is missing, and its spec says what to pull; without it, the best
    installed model is chosen and `passed_over` says what the plan wanted instead."""
    from appliance.planner import obtainable, plan, pullable

    cfg = _pin_repo(_pin_file(cfg))
    catalog = known_models()
    pulling = can_pull(cfg)
    available = pullable if pulling else obtainable
    result = plan(hw, available=available, catalog=catalog)
    ranked = result.candidates.get("main", [])
    if cfg.runtime == "vllm":  # a forced vLLM may serve any planned model, side-task ones too
        ranked = ranked + result.candidates.get("small", [])
    ranked = ranked + _pinned_other(cfg, hw, result, catalog, available)
    main = _choose("main", cfg.model, ranked, cfg, catalog)
    if main is None:
        raise ServeError("no servable model fits this machine; see `appliance plan`")
    if not cfg.model and not pulling:
        main.passed_over = _passed_over(ranked, main)
    specs = [main]
    if (cfg.small_model or "").lower() != "none":
        small = _choose("small", cfg.small_model, result.candidates.get("small", []), None, catalog)
        if small is not None and small.model.name != main.model.name:
            specs.append(small)
            main.reserve_gpu_bytes = small.gpu_bytes
    for spec in specs:
        spec.pull = _pull_target(spec) if pulling else None
        manifest().touch(spec.model.name, spec.artifact.quant)  # `appliance models`' last used
    return specs


def decide_one(cfg: ServeConfig, hw: Hardware, room: Hardware, name: str) -> LoadSpec:
    """A model a request names, installed but not loaded, planned for `room`: the machine `hw`
    minus what the resident models hold (serve/residency.py). NotServable: unknown, not
    installed (nothing is downloaded on demand) or unable to run on `hw` at all; ServeError:
    it would run here, but not in the room left now."""
    from appliance.api.on_demand import NotServable

    model = known_models().get(name)
    if model is None:
        raise NotServable(f"unknown model {name!r}")
    have = [a for a in model.artifacts if installed(model, a) is not None]
    if not have:
        raise NotServable(f"{model.name} is not installed: `appliance pull {model.name}` gets it")
    one = cfg.model_copy(update={
        "model": model.name, "quant": have[0].quant, "ctx": None, "slots": None, "kv_type": None,
        "small_model": "none", "pull": False, "runtime": "auto",
    })
    try:
        decide(one, hw)
    except ServeError as e:
        raise NotServable(str(e)) from None
    (spec,) = decide(one, room)
    spec.role = "on-demand"
    return spec


def can_pull(cfg: ServeConfig) -> bool:
    """A forced vLLM keeps its own way (the hub id handed to vLLM, or --model-dir)."""
    return cfg.pull and cfg.runtime != "vllm"


def _pull_target(spec: LoadSpec) -> str | None:
    """What `hub.pull` must fetch before this spec loads; None when the store has it or can get
    it the offline way (PyPI wheels, at load)."""
    if installed(spec.model, spec.artifact) is not None or spec.artifact.obtainable_offline:
        return None
    return f"{spec.model.name}:{spec.artifact.quant}"


def _passed_over(ranked: list[Candidate], chosen: LoadSpec) -> str | None:
    """What the user loses when the plan's best model is not on disk: its name, why it won,
    and the exact command that installs it."""
    best = next((c for c in ranked if c.runtime in SERVABLE_RUNTIMES), None)
    if best is None or best.available:
        return None
    if (best.model, best.quant) == (chosen.model.name, chosen.artifact.quant):
        return None
    return (
        f"the plan's choice for this machine is {best.model} {best.quant} on {best.runtime} "
        f"({best.tok_s:.0f} tok/s expected), but it is not installed: run "
        f"`appliance pull {best.model}:{best.quant}` and restart. Serving {chosen.model.name} "
        f"{chosen.artifact.quant} instead."
    )


def _pin_file(cfg: ServeConfig) -> ServeConfig:
    """`--model PATH.gguf`: register the file (by reference, no copy) and pin it by its name."""
    if not cfg.model or not is_gguf_path(cfg.model):
        return cfg
    try:
        rec = register_path(Path(cfg.model).expanduser(), log=lambda _: None)
    except ImportFailed as e:
        raise ServeError(str(e)) from None
    return cfg.model_copy(update={"model": rec.name, "quant": cfg.quant or rec.quant})


def pinned_repo(cfg: ServeConfig) -> str | None:
    """`--model [hf.co/]OWNER/REPO[:QUANT]` outside the catalog and not installed: the pull that
    must run before planning, since only the file's header says what the model is."""
    t = _repo_target(cfg)
    if t is None or t.model is not None or _installed_record(t) is not None or not cfg.pull:
        return None
    return cfg.model


def _pin_repo(cfg: ServeConfig) -> ServeConfig:
    """`--model [hf.co/]OWNER/REPO[:QUANT]` becomes the name it is installed (or catalogued) under."""
    t = _repo_target(cfg)
    if t is None:
        return cfg
    if t.model is not None:
        return cfg.model_copy(update={"model": t.model.name, "quant": t.quant or cfg.quant})
    if (rec := _installed_record(t)) is None:
        raise ServeError(f"{t.name} is not installed: `appliance pull {cfg.model}` gets it")
    return cfg.model_copy(update={"model": rec.name, "quant": rec.quant})


def _repo_target(cfg: ServeConfig) -> Target | None:
    """The hub repo `--model` names, when it names one rather than a known model or a file."""
    if not cfg.model or is_gguf_path(cfg.model) or known_models().get(cfg.model) is not None:
        return None
    try:
        t = parse_target(cfg.model, cfg.quant, known_models())
    except PullError:
        return None  # not a repo either: _choose says the name is unknown
    return t if t.repo else None


def _installed_record(t: Target) -> Installed | None:
    recs = [r for r in manifest().of_model(t.name) if not t.quant or r.quant.lower() == t.quant.lower()]
    return next((r for r in recs if r.intact()), None)


def _pinned_other(
    cfg: ServeConfig, hw: Hardware, result: Plan, catalog: Catalog, available: Available
) -> list[Candidate]:
    """A model pinned with --model that the planner would not make the agent's model (no
    tool-call format in its template, a short context): the user asked for it, so it is fitted
    the way side-task models are (any size), and the reason says why it is not an agent's."""
    spec = catalog.get(cfg.model) if cfg.model else None
    if spec is None or cfg.runtime == "vllm":
        return []
    if any(c.model == spec.name for c in result.candidates.get("main", [])):
        return []
    from appliance.planner.budget import Room, memory_budget
    from appliance.planner.fit import fit
    from appliance.planner.options import options
    from appliance.planner.rank import rank_key

    budget = memory_budget(hw)
    opts, rejected = options(spec, "small", budget)
    fits = [fit(o, "small", Room.of(budget), budget, available) for o in opts]
    found = sorted((c for c in fits if isinstance(c, Candidate)), key=rank_key, reverse=True)
    why = next((r.reason for r in result.rejected if r.model == spec.name and r.role == "main"), "")
    if not found:
        reasons = [r.reason for r in [*rejected, *fits] if not isinstance(r, Candidate)] or [why]
        raise ServeError(f"{spec.name} cannot be served here: {reasons[0]}")
    for c in found:
        c.reason = f"pinned with --model; not an agent model ({why}), so sized as a side-task model"
    return found


def _choose(
    role: str, pinned: str | None, ranked: list[Candidate], cfg: ServeConfig | None, catalog: Catalog
) -> LoadSpec | None:
    """The best-ranked candidate we can serve now, or the pinned model's best plan."""
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
    n_ctx = (cfg and cfg.ctx) or chosen.n_ctx
    slots = (cfg and cfg.slots) or chosen.slots
    reason = chosen.reason if not forced or forced == chosen.runtime else f"--runtime {forced}"
    if (n_ctx, slots) != (chosen.n_ctx, chosen.slots):  # the plan's text names its own sizes
        reason += f" Set by --ctx/--slots or config: {n_ctx} context shared by {slots} slots."
    return LoadSpec(
        role=role,
        model=model,
        artifact=artifact,
        n_ctx=n_ctx,
        slots=slots,
        kv_type=(cfg and cfg.kv_type) or chosen.kv_type,
        reason=reason,
        runtime=forced or chosen.runtime,
        tensor_parallel=chosen.tensor_parallel,
        gpu_bytes=chosen.memory.gpu_bytes,
        ram_bytes=chosen.memory.cpu_bytes,
        n_cpu_moe=chosen.n_cpu_moe,
        n_gpu_layers=chosen.n_gpu_layers,
    )
