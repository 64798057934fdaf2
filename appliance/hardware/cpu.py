"""CPU model, cores and the ISA extensions llama.cpp's CPU kernels care about; RAM.

Linux reads /proc/cpuinfo, macOS sysctl. Inputs are parameters so tests can feed
recorded outputs; the defaults read this machine.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

from appliance.hardware.types import CPU

Sysctl = Callable[[str], str | None]

# /proc/cpuinfo flag -> our name. x86 names are the kernel's; ARM's "Features" differ.
_X86_FLAGS = {
    "sse4_2": "sse4_2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx_vnni": "avx_vnni",
    "amx_tile": "amx",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}
_ARM_FLAGS = {
    "asimd": "neon",
    "asimdhp": "fp16",
    "asimddp": "dotprod",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
}
_ORDER = [*dict.fromkeys([*_X86_FLAGS.values(), *_ARM_FLAGS.values()])]


def _ordered(flags: set[str]) -> list[str]:
    return [f for f in _ORDER if f in flags]


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def isa_flags_linux(cpuinfo: str) -> list[str]:
    """The ISA extensions we report, from the first processor's flags/Features line."""
    blocks = [b for b in _cpuinfo_blocks(cpuinfo) if "processor" in b]
    first = blocks[0] if blocks else {}
    raw = set((first.get("flags") or first.get("features") or "").split())
    found = {ours for theirs, ours in _X86_FLAGS.items() if theirs in raw}
    found |= {ours for theirs, ours in _ARM_FLAGS.items() if theirs in raw}
    return _ordered(found)


def _usable_cpus() -> int:
    """CPUs this process may run on (a container or taskset can allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def detect_cpu_linux(
    cpuinfo: str | None = None,
    machine: str | None = None,
    physical_cores: int | None = None,
    logical_cores: int | None = None,
) -> CPU:
    """CPU from /proc/cpuinfo; core counts from psutil and the affinity mask by default."""
    if cpuinfo is None:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    blocks = [b for b in _cpuinfo_blocks(cpuinfo) if "processor" in b]
    first = blocks[0] if blocks else {}
    machine = machine or platform.machine()
    model = first.get("model name") or first.get("hardware") or platform.processor() or f"{machine} CPU"
    if logical_cores is None:
        logical_cores = _usable_cpus()
    if physical_cores is None:
        cores = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
        if cores:
            physical_cores = len(cores)
        else:
            import psutil

            physical_cores = psutil.cpu_count(logical=False) or logical_cores
    return CPU(
        model=model,
        physical_cores=min(physical_cores, logical_cores),
        logical_cores=logical_cores,
        arch=_arch(machine),
        flags=isa_flags_linux(cpuinfo),
    )


def _arch(machine: str) -> str:
    m = machine.lower()
    if m in ("amd64", "x86_64"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "arm64"
    return m


# macOS: Apple Silicon advertises features as hw.optional.* = 1.
_MAC_ARM_FLAGS = {
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_BF16": "bf16",
}
# Intel Macs: machdep.cpu.features / leaf7_features, upper-case words.
_MAC_X86_FLAGS = {
    "SSE4.2": "sse4_2",
    "AVX1.0": "avx",
    "AVX2": "avx2",
    "FMA": "fma",
    "F16C": "f16c",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512VL": "avx512vl",
    "AVX512VNNI": "avx512_vnni",
}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def detect_cpu_macos(sysctl: Sysctl) -> CPU:
    """CPU from sysctl; arch from hw.optional.arm64 so Rosetta doesn't pass for Intel."""
    arm = sysctl("hw.optional.arm64") == "1"
    flags: set[str] = set()
    if arm:
        flags = {ours for key, ours in _MAC_ARM_FLAGS.items() if sysctl(key) == "1"}
        if sysctl("hw.optional.neon_fp16") == "1":
            flags.add("fp16")
    else:
        words = f"{sysctl('machdep.cpu.features') or ''} {sysctl('machdep.cpu.leaf7_features') or ''}".split()
        flags = {ours for theirs, ours in _MAC_X86_FLAGS.items() if theirs in words}
    logical = _int(sysctl("hw.logicalcpu")) or _int(sysctl("hw.ncpu")) or os.cpu_count() or 1
    physical = _int(sysctl("hw.physicalcpu")) or logical
    return CPU(
        model=sysctl("machdep.cpu.brand_string") or "unknown Mac CPU",
        physical_cores=physical,
        logical_cores=logical,
        arch="arm64" if arm else "x86_64",
        flags=_ordered(flags),
    )
