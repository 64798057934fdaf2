"""Getting what `serve` planned onto disk before it loads: the pulls its load specs ask for,
with progress on the console and in /health, and the fall back when the planned model cannot
be had (air-gapped, offline, gated without a token, a hub error).

Runs in serve's loader thread, after the HTTP server is up, so a long download shows as
`downloading` on /health instead of a refused connection. It never serves a smaller model
silently: a failed pull is said in red with its reason and the command that fixes it.

Which quant, when a target names none: for a catalog model, the planner's best candidate of
that model on this machine; for any other GGUF repo, the largest quant whose files fit in
`ROOM_FRACTION` of the memory budget (the GPU's, or RAM's without a GPU), since the rest of
the budget is needed for the KV cache and compute buffers. `appliance pull` uses the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from appliance.api.registry import Download, ModelRegistry
from appliance.config import ServeConfig
from appliance.hardware.types import Hardware
from appliance.models.hub_errors import PullError
from appliance.models.inventory import known_models
from appliance.models.manifest import Installed
from appliance.serve.choice import LoadSpec, decide

ROOM_FRACTION = 0.8
Say = Callable[[str], None]

if TYPE_CHECKING:  # the hub module imports huggingface_hub, which serve loads only to pull
    from appliance.models.hub import Preference


def obtain(
    specs: list[LoadSpec], cfg: ServeConfig, hw: Hardware, registry: ModelRegistry, log: Say, alert: Say
) -> list[LoadSpec]:
    """The specs to load: `specs` once their pulls are done; else (not pinned) the best installed
    models, after saying in red what was planned and why it could not be had. A pinned model
    that cannot be had raises the ServeError that says so."""
    for spec in specs:
        if spec.pull is None:
            continue
        try:
            pull_for_serve(spec.pull, cfg, hw, registry, log)
        except PullError as e:
            alert(f"could not get the planned model {spec.model.name} {spec.artifact.quant}: {e}")
            fallback = decide(cfg.model_copy(update={"pull": False}), hw)
            fallback[0].passed_over = (
                f"{spec.model.name} {spec.artifact.quant} is the plan's choice for this machine but "
                f"could not be downloaded (above). Serving {fallback[0].model.name} "
                f"{fallback[0].artifact.quant} instead; once fixed, `appliance pull {spec.pull}` "
                "and restart."
            )
            return fallback
    return specs


def pull_pinned(
    target: str, cfg: ServeConfig, hw: Hardware, registry: ModelRegistry, log: Say
) -> list[LoadSpec]:
    """`serve --model [hf.co/]OWNER/REPO[:QUANT]` not yet installed: pull it, then plan it like
    any installed model (its GGUF header says what it is)."""
    rec = pull_for_serve(target, cfg, hw, registry, log)
    return decide(cfg.model_copy(update={"model": rec.name, "quant": rec.quant}), hw)


def pull_for_serve(
    target: str, cfg: ServeConfig, hw: Hardware, registry: ModelRegistry, log: Say
) -> Installed:
    """One `hub.pull`, its byte counts published on the registry for /health while it runs."""
    from appliance.models.hub import pull

    def progress(done: int, total: int) -> None:
        registry.download = Download(target, done, total)

    try:
        return pull(
            target, prefer=machine_preference(lambda: hw), air_gapped=cfg.router.air_gapped,
            pip_mirror=cfg.model_mirror, on_progress=progress, log=log, catalog=known_models(),
        )
    finally:
        registry.download = None


def machine_preference(hardware: Callable[[], Hardware]) -> Preference:
    """The quant choice for a machine: the planner's for catalog models, a size rule for other
    repos. `hardware` is called only when a target leaves the quant open (detection takes time)."""
    from appliance.models.hub import Preference
    from appliance.planner import assume_downloadable, memory_budget, plan
    from quantization.catalog import Catalog, ModelSpec

    hw = cache(hardware)

    def catalog_quant(model: ModelSpec) -> str | None:
        result = plan(hw(), available=assume_downloadable, catalog=Catalog([model]))
        ranked = result.candidates.get("main", []) + result.candidates.get("small", [])
        return next((c.quant for c in ranked if c.model == model.name), None)

    def room_bytes() -> int:
        budget = memory_budget(hw())
        return int(ROOM_FRACTION * (budget.gpu_bytes or budget.ram_bytes))

    return Preference(catalog_quant=catalog_quant, room_bytes=room_bytes)
