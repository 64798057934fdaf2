"""NVIDIA GPUs through NVML: what is really free, not just what is installed.

Every call is wrapped: a driver that lacks one query (bus width on old GPUs, process
names inside a container) costs a note, never the whole probe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from appliance.hardware.bandwidth import bandwidth_from_bus, gpu_bandwidth_gbps
from appliance.hardware.types import GPU, GPUProcess

T = TypeVar("T")

NVML_CLOCK_MEM = 2  # pynvml.NVML_CLOCK_MEM


def _load_pynvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(code: int) -> str:
    """NVML encodes CUDA 12.4 as 12040."""
    return f"{code // 1000}.{(code % 1000) // 10}"


class _Probe:
    """Runs NVML calls, turning each failure into a note."""

    def __init__(self, notes: list[str]):
        self.notes = notes

    def call(self, what: str, fn: Callable[[], T], quiet: bool = False) -> T | None:
        try:
            return fn()
        except Exception as e:
            if not quiet:
                self.notes.append(f"NVIDIA: could not read {what}: {_text(e) or type(e).__name__}")
            return None


def _process_name(nvml: Any, pid: int) -> str:
    """Basename of the process holding VRAM; NVML can't see other PID namespaces, psutil tries."""
    try:
        return os.path.basename(_text(nvml.nvmlSystemGetProcessName(pid)))
    except Exception:
        pass
    try:
        import psutil

        return psutil.Process(pid).name()
    except Exception:
        return ""


def _processes(nvml: Any, handle: Any, probe: _Probe, index: int) -> list[GPUProcess]:
    """Compute and graphics (Xorg, compositors) processes, one entry per pid."""
    seen: dict[int, GPUProcess] = {}
    for kind in ("Compute", "Graphics"):
        fn = getattr(nvml, f"nvmlDeviceGet{kind}RunningProcesses", None)
        if fn is None:
            continue
        procs = probe.call(f"GPU {index} {kind.lower()} processes", lambda fn=fn: fn(handle)) or []
        for p in procs:
            pid = int(p.pid)
            used = getattr(p, "usedGpuMemory", None)
            used = int(used) if used is not None else 0  # None: not reported (WDDM, some containers)
            if pid in seen:
                seen[pid].used_bytes = max(seen[pid].used_bytes, used)
            else:
                seen[pid] = GPUProcess(pid=pid, name=_process_name(nvml, pid), used_bytes=used)
    return sorted(seen.values(), key=lambda p: -p.used_bytes)


def _bandwidth(nvml: Any, handle: Any, name: str, probe: _Probe) -> float | None:
    spec = gpu_bandwidth_gbps(name)
    if spec is not None:
        return spec
    bus = probe.call("memory bus width", lambda: nvml.nvmlDeviceGetMemoryBusWidth(handle), quiet=True)
    clock_type = getattr(nvml, "NVML_CLOCK_MEM", NVML_CLOCK_MEM)
    clock = probe.call("memory clock", lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, clock_type), quiet=True)
    if bus and clock:
        return bandwidth_from_bus(int(bus), int(clock))
    probe.notes.append(
        f"NVIDIA: memory bandwidth of {name} unknown (not in the table, NVML gave no bus/clock)"
    )
    return None


def _device(nvml: Any, index: int, driver: str | None, cuda: str | None, probe: _Probe) -> GPU | None:
    handle = probe.call(f"GPU {index} handle", lambda: nvml.nvmlDeviceGetHandleByIndex(index))
    if handle is None:
        return None
    name = probe.call(f"GPU {index} name", lambda: _text(nvml.nvmlDeviceGetName(handle)))
    name = name or f"NVIDIA GPU {index}"
    mem = probe.call(f"GPU {index} memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    if mem is None:
        probe.notes.append(f"NVIDIA: skipped GPU {index} ({name}): no memory information")
        return None
    cc = probe.call(
        f"GPU {index} compute capability", lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle)
    )
    return GPU(
        index=index,
        vendor="nvidia",
        name=name,
        total_bytes=int(mem.total),
        free_bytes=int(mem.free),
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
        bandwidth_gbps=_bandwidth(nvml, handle, name, probe),
        driver_version=driver,
        cuda_version=cuda,
        processes=_processes(nvml, handle, probe, index),
    )


def detect_nvidia(nvml: Any = None) -> tuple[list[GPU], list[str]]:
    """All NVIDIA GPUs and the notes on what could not be read.

    `nvml` is the pynvml module by default; tests pass a stand-in built from
    recorded real outputs.
    """
    notes: list[str] = []
    if nvml is None:
        nvml = _load_pynvml()
        if nvml is None:
            return [], ["NVIDIA: nvidia-ml-py (pynvml) is not installed; NVIDIA GPUs not probed"]
    try:
        nvml.nvmlInit()
    except Exception as e:
        return [], [f"NVIDIA: no NVIDIA driver/GPU found (NVML init failed: {_text(e) or type(e).__name__})"]
    probe = _Probe(notes)
    try:
        driver = probe.call("driver version", lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        code = probe.call("CUDA version", lambda: int(nvml.nvmlSystemGetCudaDriverVersion_v2()))
        cuda = _cuda_version(code) if code else None
        count = probe.call("GPU count", lambda: int(nvml.nvmlDeviceGetCount())) or 0
        gpus = [g for i in range(count) if (g := _device(nvml, i, driver, cuda, probe)) is not None]
    finally:
        probe.call("shutdown", nvml.nvmlShutdown, quiet=True)
    return gpus, notes
