"""What the composition root knows and the API cannot find out by itself: the machine as
detected, and for each loaded model the plan it was loaded by (quant, runtime, placement,
memory, why the planner chose it).

`appliance serve` fills a `ServeFacts` as it loads; a bare `create_app` (tests) has an empty
one, and the console then shows what the runtimes themselves report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelFacts:
    """One loaded model as planned. Bytes are the planner's estimate of what it holds."""

    role: str
    quant: str
    runtime: str  # llama.cpp | vllm
    placement: str  # gpu | gpu+ram | cpu
    n_ctx: int
    slots: int
    kv_type: str
    gpu_bytes: int
    ram_bytes: int
    reason: str  # the planner's why
    n_cpu_moe: int = 0  # gpu+ram: layers whose routed experts sit in system RAM
    n_gpu_layers: int = -1  # a dense split: llama.cpp's -ngl (-1: all on the GPU)
    passed_over: str | None = None  # the plan's first choice, when it is not what is served


def _no_plans() -> Mapping[str, ModelFacts]:
    return {}


@dataclass
class ServeFacts:
    machine: dict[str, Any] | None = None  # `appliance detect --json`'s object
    # Runtime id -> the plan it was loaded by, asked on each request (models load and unload
    # while serve runs); called on the event loop, where serve's residency changes them.
    plans: Callable[[], Mapping[str, ModelFacts]] = _no_plans
    bench_dir: Path | None = None  # where `appliance bench` writes; None: DATA_DIR/bench
