"""AMD GPUs through rocm-smi, best effort: only when the binary is on PATH.

One call gives names and VRAM: `rocm-smi --showproductname --showmeminfo vram --json`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

from appliance.hardware.bandwidth import gpu_bandwidth_gbps
from appliance.hardware.types import GPU

Runner = Callable[[list[str]], str | None]

ROCM_SMI_ARGS = ["--showproductname", "--showmeminfo", "vram", "--json"]


def run_rocm_smi(args: list[str]) -> str | None:
    """rocm-smi's stdout, or None when it is not installed or fails."""
    exe = shutil.which("rocm-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _field(card: dict[str, str], *names: str) -> str | None:
    """rocm-smi's key spelling changed across releases ('Card series' / 'Card Series')."""
    lowered = {k.lower(): v for k, v in card.items()}
    for n in names:
        if (v := lowered.get(n.lower())) not in (None, "", "N/A"):
            return v
    return None


def parse_rocm_smi(text: str) -> tuple[list[GPU], list[str]]:
    """GPUs from rocm-smi's JSON; cards without VRAM numbers are noted and skipped."""
    notes: list[str] = []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [], ["AMD: rocm-smi printed no JSON"]
    gpus: list[GPU] = []
    cards = sorted((k for k in data if k.startswith("card")), key=lambda k: int(k[4:] or 0))
    for key in cards:
        card = data[key]
        total = _field(card, "VRAM Total Memory (B)")
        used = _field(card, "VRAM Total Used Memory (B)")
        name = _field(card, "Card Series", "Card series", "Card Model", "Card model") or f"AMD GPU {key}"
        if total is None or not total.isdigit():
            notes.append(f"AMD: no VRAM figure for {key} ({name})")
            continue
        free = int(total) - int(used) if used and used.isdigit() else int(total)
        bandwidth = gpu_bandwidth_gbps(name)
        if bandwidth is None:
            notes.append(f"AMD: memory bandwidth of {name} unknown")
        gpus.append(
            GPU(
                index=len(gpus),
                vendor="amd",
                name=name,
                total_bytes=int(total),
                free_bytes=max(0, free),
                bandwidth_gbps=bandwidth,
            )
        )
    return gpus, notes


def detect_amd(run: Runner | None = None) -> tuple[list[GPU], list[str]]:
    """AMD GPUs; nothing (and no note) on machines without rocm-smi."""
    run = run or run_rocm_smi
    if run is run_rocm_smi and shutil.which("rocm-smi") is None:
        return [], []
    text = run(ROCM_SMI_ARGS)
    if text is None:
        return [], ["AMD: rocm-smi is installed but failed; AMD GPUs not probed"]
    return parse_rocm_smi(text)
