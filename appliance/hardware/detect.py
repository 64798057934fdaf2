"""`detect()`: this machine as a `Hardware`, every probe wrapped so a missing
driver, library or device becomes a note instead of a crash.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

from appliance.hardware.amd import detect_amd
from appliance.hardware.apple import detect_apple, system_sysctl
from appliance.hardware.cpu import detect_cpu_linux, detect_cpu_macos
from appliance.hardware.llama_build import cpu_only_warning, llama_gpu_offload
from appliance.hardware.memory import read_ram
from appliance.hardware.nvidia import detect_nvidia
from appliance.hardware.types import CPU, GPU, Hardware


def _safe(what: str, fn: Callable[[], Any], notes: list[str], default: Any) -> Any:
    """Run one probe; an unexpected exception becomes a note and the default."""
    try:
        return fn()
    except Exception as e:
        notes.append(f"{what}: probe failed ({type(e).__name__}: {e})")
        return default


def _cpu(os_name: str, sysctl: Callable[[str], str | None]) -> CPU:
    if os_name == "darwin":
        return detect_cpu_macos(sysctl)
    return detect_cpu_linux()


def _fallback_cpu() -> CPU:
    import os

    n = os.cpu_count() or 1
    return CPU(
        model=platform.processor() or "unknown", physical_cores=n, logical_cores=n, arch=platform.machine()
    )


def detect(
    nvml: Any = None,
    sysctl: Callable[[str], str | None] | None = None,
    rocm_smi: Callable[[list[str]], str | None] | None = None,
    offload: Callable[[], tuple[bool | None, list[str]]] = llama_gpu_offload,
    os_name: str | None = None,
    hostname: str | None = None,
) -> Hardware:
    """Describe this machine. Every argument replaces one probe (tests feed recordings)."""
    os_name = os_name or platform.system().lower()
    sysctl = sysctl or system_sysctl
    notes: list[str] = []

    cpu = _safe("CPU", lambda: _cpu(os_name, sysctl), notes, None) or _fallback_cpu()
    ram_total, ram_available, ram_notes = _safe("RAM", read_ram, notes, (0, 0, []))
    notes += ram_notes

    gpus: list[GPU] = []
    if os_name == "darwin":
        found, found_notes = _safe("Apple GPU", lambda: detect_apple(sysctl), notes, ([], []))
        gpus += found
        notes += found_notes
    else:
        for what, probe in (("NVIDIA", lambda: detect_nvidia(nvml)), ("AMD", lambda: detect_amd(rocm_smi))):
            found, found_notes = _safe(what, probe, notes, ([], []))
            gpus += [g.model_copy(update={"index": len(gpus) + i}) for i, g in enumerate(found)]
            notes += found_notes
    if not gpus:
        notes.append("no GPU found: models run on the CPU from system RAM")

    # Unified memory: the RAM bandwidth is the GPU's.
    ram_bandwidth = next((g.bandwidth_gbps for g in gpus if g.unified), None)

    gpu_offload, offload_notes = _safe("llama.cpp", offload, notes, (None, []))
    notes += offload_notes

    hw = Hardware(
        name=hostname or platform.node() or "localhost",
        source="detected",
        os=os_name,
        cpu=cpu,
        ram_total_bytes=ram_total,
        ram_available_bytes=ram_available,
        ram_bandwidth_gbps=ram_bandwidth,
        gpus=gpus,
        llama_gpu_offload=gpu_offload,
        notes=notes,
    )
    warning = cpu_only_warning(hw)
    if warning:
        hw.notes.insert(0, "WARNING: " + warning)
    return hw
