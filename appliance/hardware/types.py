"""What the detector reports and what a hardware profile holds: one shape for both.

The planner only ever sees a `Hardware`, so a real machine and a simulated one
(`--profile rtx-4090`) are planned by the same code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Vendor = Literal["nvidia", "apple", "amd"]


class GPUProcess(BaseModel):
    """A process already holding VRAM: memory the planner cannot use."""

    pid: int
    name: str = ""
    used_bytes: int


class GPU(BaseModel):
    index: int
    vendor: Vendor
    name: str
    total_bytes: int
    # What is really free now (a display server or another job holds the rest).
    free_bytes: int
    # Apple: CPU and GPU share memory; total/free are the Metal working-set budget.
    unified: bool = False
    compute_capability: str | None = None  # "8.9" for Ada
    bandwidth_gbps: float | None = None  # GB/s (10^9 bytes), the decode-speed ceiling
    driver_version: str | None = None
    cuda_version: str | None = None
    processes: list[GPUProcess] = Field(default_factory=list)


class CPU(BaseModel):
    model: str
    physical_cores: int
    logical_cores: int
    arch: str  # x86_64, arm64
    flags: list[str] = Field(default_factory=list)  # avx2, avx512f, neon, ...


class Hardware(BaseModel):
    """One machine, detected or simulated."""

    name: str  # hostname or the profile's name
    source: str  # "detected" or "profile:<name>"
    os: str  # linux, darwin, windows
    cpu: CPU
    ram_total_bytes: int
    ram_available_bytes: int
    ram_bandwidth_gbps: float | None = None
    gpus: list[GPU] = Field(default_factory=list)
    # Whether the installed llama.cpp build can offload to a GPU (None: unknown/not installed).
    llama_gpu_offload: bool | None = None
    # Things the detector could not find or read: reported, never a crash.
    notes: list[str] = Field(default_factory=list)

    @property
    def gpu_total_bytes(self) -> int:
        return sum(g.total_bytes for g in self.gpus)

    @property
    def gpu_free_bytes(self) -> int:
        return sum(g.free_bytes for g in self.gpus)

    @property
    def has_nvidia(self) -> bool:
        return any(g.vendor == "nvidia" for g in self.gpus)

    @property
    def is_apple(self) -> bool:
        return any(g.vendor == "apple" for g in self.gpus)
