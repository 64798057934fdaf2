"""The machine the numbers were taken on, and the physical ceiling it implies.

Numbers without the machine are meaningless, so the results carry `appliance detect`'s
view of it when that module is importable, else what platform and psutil can tell.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def describe_machine() -> dict[str, Any]:
    base = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }
    try:
        from appliance.hardware.detect import detect

        base["hardware"] = detect().model_dump(mode="json")
        base["source"] = "appliance.hardware.detect"
    except Exception as e:  # a bench must not die because detection did
        base["source"] = f"platform/psutil ({type(e).__name__})"
        base.update(_fallback())
    return base


def _fallback() -> dict[str, Any]:
    out: dict[str, Any] = {"processor": platform.processor() or platform.machine()}
    try:
        import psutil

        out["ram_total_bytes"] = psutil.virtual_memory().total
        out["physical_cores"] = psutil.cpu_count(logical=False)
    except Exception:
        pass
    return out


def bandwidth_gbps(machine: dict[str, Any]) -> float | None:
    """The memory bandwidth decode is bound by: the first GPU's, else system RAM's."""
    hw = machine.get("hardware") or {}
    for gpu in hw.get("gpus") or []:
        if gpu.get("bandwidth_gbps"):
            return float(gpu["bandwidth_gbps"])
    bw = hw.get("ram_bandwidth_gbps")
    return float(bw) if bw else None


def ceiling(machine: dict[str, Any], model_bytes: int | None) -> dict[str, Any] | None:
    """Decode tok/s if every weight is read once per token at full bandwidth (an upper bound)."""
    bw = bandwidth_gbps(machine)
    if not bw or not model_bytes:
        return None
    return {"bandwidth_gbps": bw, "model_bytes": model_bytes, "decode_tok_s": bw * 1e9 / model_bytes}


def catalog_model_bytes(name: str) -> int | None:
    try:
        from quantization.catalog import load_catalog

        model = load_catalog().get(name)
        return model.artifacts[0].size_bytes if model and model.artifacts else None
    except Exception:
        return None
