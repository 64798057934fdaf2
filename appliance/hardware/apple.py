"""Apple Silicon: the GPU shares RAM, but Metal only lets it wire part of it.

The part is Metal's recommendedMaxWorkingSetSize: about 2/3 of RAM on Macs with up
to 36 GiB and 3/4 on larger ones. `sysctl iogpu.wired_limit_mb` (Sonoma and later;
`debug.iogpu.wired_limit` in bytes on Ventura), when set above 0, replaces it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from appliance.hardware.bandwidth import apple_bandwidth_gbps, apple_chip
from appliance.hardware.types import GPU
from appliance.units import GiB, MiB

Sysctl = Callable[[str], str | None]

# Held back from the budget for Metal's own buffers and the window server.
METAL_RESERVE_BYTES = 512 * MiB
SMALL_MAC_BYTES = 36 * GiB


def system_sysctl(name: str) -> str | None:
    """`sysctl -n NAME` on this machine; None when the key or the binary is missing."""
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def sysctl_from_text(text: str) -> Sysctl:
    """A sysctl reader over recorded `sysctl a b c` output ("name: value" lines)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.strip() != "sysctl":  # "sysctl: unknown oid ..." is an error line
            values[name.strip()] = value.strip()
    return values.get


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def wired_limit_bytes(sysctl: Sysctl) -> int | None:
    """The user's GPU wired-memory override, None when unset (0) or absent."""
    mb = _int(sysctl("iogpu.wired_limit_mb"))
    if mb and mb > 0:
        return mb * MiB
    legacy = _int(sysctl("debug.iogpu.wired_limit"))
    if legacy and legacy > 0:
        return legacy
    return None


def metal_budget_bytes(ram_bytes: int, wired_limit: int | None = None) -> int:
    """How much of RAM the GPU may hold (see the module docstring)."""
    if wired_limit:
        return min(wired_limit, ram_bytes)
    fraction = 2 / 3 if ram_bytes <= SMALL_MAC_BYTES else 3 / 4
    return int(ram_bytes * fraction)


def detect_apple(sysctl: Sysctl | None = None) -> tuple[list[GPU], list[str]]:
    """The Apple GPU as one unified-memory device, and notes; nothing on Intel Macs."""
    sysctl = sysctl or system_sysctl
    notes: list[str] = []
    brand = sysctl("machdep.cpu.brand_string") or ""
    chip = apple_chip(brand)
    if chip is None:
        return [], [f"Apple: no Apple Silicon GPU ({brand or 'unknown CPU'}); Metal offload not planned"]
    if sysctl("sysctl.proc_translated") == "1":
        notes.append(
            "Apple: this Python runs under Rosetta (x86_64): llama.cpp cannot use Metal; "
            "install an arm64 Python"
        )
    ram = _int(sysctl("hw.memsize"))
    if not ram:
        return [], [*notes, "Apple: could not read hw.memsize; GPU memory unknown"]
    limit = wired_limit_bytes(sysctl)
    budget = metal_budget_bytes(ram, limit)
    if limit:
        notes.append(f"Apple: GPU wired limit set by sysctl iogpu.wired_limit_mb to {budget / GiB:.1f} GiB")
    bandwidth = apple_bandwidth_gbps(chip, _int(sysctl("hw.perflevel0.physicalcpu")))
    if bandwidth is None:
        notes.append(f"Apple: memory bandwidth of {chip} unknown")
    gpu = GPU(
        index=0,
        vendor="apple",
        name=f"Apple {chip}",
        total_bytes=budget,
        free_bytes=max(0, budget - METAL_RESERVE_BYTES),
        unified=True,
        bandwidth_gbps=bandwidth,
    )
    return [gpu], notes
