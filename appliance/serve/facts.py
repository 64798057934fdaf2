"""What serve tells the console (api/console/facts.py): the machine it planned for and, per
loaded model, the load spec the planner produced. Here because only the composition root
knows both the plan's types and the API's."""

from __future__ import annotations

from typing import Any

from appliance.api.console import ModelFacts
from appliance.hardware.types import Hardware
from appliance.serve.choice import LoadSpec


def machine_facts(hw: Hardware) -> dict[str, Any]:
    """`appliance detect --json`'s object."""
    return hw.model_dump(mode="json")


def model_facts(spec: LoadSpec) -> ModelFacts:
    return ModelFacts(
        role=spec.role,
        quant=spec.artifact.quant,
        runtime=spec.runtime,
        placement=placement(spec),
        n_ctx=spec.n_ctx,
        slots=spec.slots,
        kv_type=spec.kv_type,
        gpu_bytes=spec.gpu_bytes,
        ram_bytes=spec.ram_bytes,
        reason=spec.reason,
        n_cpu_moe=spec.n_cpu_moe,
        n_gpu_layers=spec.n_gpu_layers,
        passed_over=spec.passed_over,
    )


def placement(spec: LoadSpec) -> str:
    """The planner's placement names: all on the GPU, MoE experts split to RAM, or the CPU."""
    if spec.n_cpu_moe > 0 or (spec.n_gpu_layers >= 0 and spec.gpu_bytes > 0):
        return "gpu+ram"
    return "gpu" if spec.gpu_bytes > 0 else "cpu"
