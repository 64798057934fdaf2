"""The planner's vocabulary: an option to fit, and the plan it produces (candidates, rejections,
suggestions, the budget). Every other planner module speaks in these, so they sit at the bottom
and import nothing else from the planner."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr

from quantization import formats
from quantization.catalog import Artifact, ModelSpec
from quantization.formats import Backend, RuntimeKind

Role = Literal["main", "small"]
# gpu+ram: a model split between VRAM and system RAM: some layers' routed experts (MoE, --n-cpu-moe)
# or, for a dense model, the first layers whole (llama.cpp's -ngl below all)
Placement = Literal["gpu", "gpu+ram", "cpu"]
Available = Callable[[ModelSpec, Artifact], bool]

# Precision classes by bits per weight of the format: within one model a higher class wins, inside
# a class the faster (smaller) quant wins. Q4_K_M..Q6_K differ little; 8 bits is near-lossless;
# below 3.5 bits (Q2_K, IQ2_*) quality falls apart, so those only win when nothing else fits.
PRECISION = ["lossy", "acceptable", "good", "near-lossless"]


@dataclass(frozen=True)
class Option:
    """A concrete way to run one artifact: runtime, where the weights live, how many GPUs."""

    model: ModelSpec
    artifact: Artifact
    runtime: RuntimeKind
    placement: Placement
    backend: Backend
    tp: int = 1
    # gpu+ram: the routed experts of the first n_cpu_moe layers sit in system RAM (llama.cpp's
    # --n-cpu-moe N), the rest of the model on the GPU; 0 for every other placement.
    n_cpu_moe: int = 0
    # gpu+ram, dense: llama.cpp's -ngl value: the output layer and the last n_gpu_layers - 1 blocks
    # (with their KV) on the GPU, the first blocks in RAM; -1 (all) for every other option.
    n_gpu_layers: int = -1

    @property
    def splits_layers(self) -> bool:
        """A dense model split by layers (-ngl); a split MoE keeps every layer, less its experts."""
        return self.placement == "gpu+ram" and not self.model.is_moe

    @property
    def bpw(self) -> float:
        return self.artifact.size_bytes * 8 / self.model.params_total

    @property
    def precision(self) -> int:
        """Index into PRECISION; int4 AWQ/GPTQ rank with Q4_K_M."""
        fmt, quant = self.artifact.format, self.artifact.quant
        if fmt in ("awq", "gptq"):
            return 2
        try:
            bpw = formats.weight_bpw(fmt, quant)
        except ValueError:
            bpw = self.bpw
        return 3 if bpw >= 8 else 2 if bpw >= 4.5 else 1 if bpw >= 3.5 else 0


class Memory(BaseModel):
    """Where a candidate's bytes go (from the estimator), and what is left."""

    weights_bytes: int
    weights_gpu_bytes: int
    weights_cpu_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int
    margin_bytes: int
    gpu_bytes: int
    cpu_bytes: int
    headroom_gpu_bytes: int  # budget left on the GPU(s) after this candidate
    headroom_ram_bytes: int  # system RAM budget left after it
    kv_cpu_bytes: int = 0  # of kv_bytes, the cache of the blocks a partial offload leaves in RAM


class Candidate(BaseModel):
    """One way to serve one model for one role: all a runtime needs to load it."""

    role: Role
    model: str
    display_name: str
    quant: str
    format: str
    bpw: float  # bits per weight of the artifact (file size x 8 / parameters)
    precision: str  # one of PRECISION
    runtime: RuntimeKind
    placement: Placement
    tensor_parallel: int = 1  # vLLM over identical GPUs
    n_cpu_moe: int = 0  # gpu+ram: layers whose routed experts are in system RAM (--n-cpu-moe N)
    moe_layers: int = 0  # layers with routed experts (the M of "N of M"); 0 for a dense model
    n_gpu_layers: int = -1  # llama.cpp's -ngl: -1 all; a split dense model: the output + last N-1 blocks
    offloadable_layers: int = 0  # split dense: blocks + output layer (the M of llama.cpp's "offloaded N/M")
    n_ctx: int  # total KV cells (max tokens of one request); slots share them
    slots: int
    kv_type: str
    memory: Memory
    tok_s: float  # expected decode speed of one stream
    tok_s_basis: str
    prefill_tok_s: float | None = None  # CPU only (GPUs are not compute-bound here)
    quality: float
    tier: int  # 2 usable for the role, 1 poor, 0 bad (context or speed)
    available: bool
    download: str | None = None
    warnings: list[str] = Field(default_factory=list)
    reason: str = ""
    _option: Option | None = PrivateAttr(default=None)


class Rejection(BaseModel):
    role: Role
    model: str
    quant: str | None = None
    runtime: RuntimeKind | None = None
    quality: float
    kind: Literal["role", "runtime", "memory"]  # unfit for the role / format or GPU / does not fit
    weights_bytes: int = 0  # the artifact's size (0: the whole model was ruled out)
    reason: str


class Suggestion(BaseModel):
    """A better candidate that needs a download first."""

    role: Role
    model: str
    quant: str
    runtime: RuntimeKind
    placement: Placement
    n_ctx: int  # as the only model here (a small model beside it takes some)
    tok_s: float
    download: str
    reason: str


class Budget(BaseModel):
    """The memory the planner may fill and the bandwidth that sets decode speed."""

    backend: Backend
    gpu_bytes: int  # llama.cpp: usable on the GPU(s), summed over a tensor split
    vllm_gpu_bytes: int  # vLLM: tensor_parallel x the smallest free GPU (0: no vLLM here)
    vllm_tp: int
    ram_bytes: int  # system RAM for CPU weights, offloaded experts, a CPU-side small model
    unified: bool  # Apple: the GPU budget is carved out of the same RAM
    gpu_gbps: float | None  # one GPU's bandwidth (a llama.cpp layer split takes turns)
    cpu_gbps: float  # what the CPU can stream: min(RAM bandwidth, cores x per-core rate)
    cpu_flops: float  # CPU prefill FLOP/s, all cores
    compute_capability: float | None
    n_gpus: int
    derivation: list[str]


class HardwareSummary(BaseModel):
    name: str
    source: str
    cpu: str
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[str]


class Plan(BaseModel):
    hardware: HardwareSummary
    budget: Budget
    main: Candidate | None
    small: Candidate | None
    headroom_gpu_bytes: int  # left after main and small
    headroom_ram_bytes: int
    candidates: dict[Role, list[Candidate]]
    rejected: list[Rejection]
    suggested: list[Suggestion]
    notes: list[str]
