"""Memory bandwidth: the ceiling on decode speed (every token reads the weights once).

NVML does not report bandwidth, so spec-sheet numbers are kept here, keyed by the
name the driver reports. For a GPU missing from the table the caller can fall back
to bus width x memory clock, which NVML does give.
"""

from __future__ import annotations

import re

# GB/s (10^9 bytes/s) from the vendors' spec sheets, keyed by a human spelling of
# the name the driver reports; `_normalize` makes "NVIDIA A100-SXM4-80GB" and
# "A100 SXM4 80GB" the same key.
_GPU_SPEC_GBPS: dict[str, float] = {
    # GeForce Blackwell / Ada / Ampere / Turing (desktop)
    "RTX 5090": 1792,
    "RTX 5080": 960,
    "RTX 5070 Ti": 896,
    "RTX 5070": 672,
    "RTX 5060 Ti": 448,
    "RTX 4090": 1008,
    "RTX 4090 D": 1008,
    "RTX 4080 SUPER": 736,
    "RTX 4080": 717,
    "RTX 4070 Ti SUPER": 672,
    "RTX 4070 Ti": 504,
    "RTX 4070 SUPER": 504,
    "RTX 4070": 504,
    "RTX 4060 Ti": 288,
    "RTX 4060": 272,
    "RTX 3090 Ti": 1008,
    "RTX 3090": 936,
    "RTX 3080 Ti": 912,
    "RTX 3080": 760,
    "RTX 3070 Ti": 608,
    "RTX 3070": 448,
    "RTX 3060 Ti": 448,
    "RTX 3060": 360,
    "RTX 2080 Ti": 616,
    # GeForce laptop parts: same names, much narrower memory buses.
    "RTX 4090 Laptop GPU": 576,
    "RTX 4080 Laptop GPU": 432,
    "RTX 4070 Laptop GPU": 256,
    "RTX 4060 Laptop GPU": 256,
    # Workstation
    "RTX 6000 Ada Generation": 960,
    "RTX 5000 Ada Generation": 576,
    "RTX 4000 Ada Generation": 360,
    "RTX A6000": 768,
    "RTX A5000": 768,
    "RTX A4000": 448,
    # Data centre
    "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935,
    "A100-SXM4-40GB": 1555,
    "A100-PCIE-40GB": 1555,
    "H100 80GB HBM3": 3350,  # SXM5
    "H100 PCIe": 2000,
    "H100 NVL": 3900,
    "H200": 4800,
    "H200 NVL": 4800,
    "L40S": 864,
    "L40": 864,
    "L4": 300,
    "A10": 600,
    "A10G": 600,
    "T4": 320,
    "V100-SXM2-16GB": 900,
    "V100-SXM2-32GB": 900,
    "V100-PCIE-16GB": 900,
    "V100-PCIE-32GB": 900,
    # AMD (names as rocm-smi's "Card Series" prints them)
    "Radeon RX 7900 XTX": 960,
    "Radeon RX 7900 XT": 800,
    "Radeon RX 7900 GRE": 576,
    "Radeon RX 6900 XT": 512,
    "Radeon RX 6800 XT": 512,
    "Radeon PRO W7900": 864,
    "Instinct MI300X": 5300,
    "Instinct MI250X": 3277,
    "Instinct MI210": 1638,
}

_NOISE = re.compile(r"\b(nvidia|geforce|tesla|amd)\b")


def _normalize(name: str) -> str:
    """Lower-case, vendor words dropped, dashes as spaces: one spelling per GPU."""
    s = _NOISE.sub(" ", name.lower().replace("-", " "))
    return " ".join(s.split())


_BY_KEY = {_normalize(k): v for k, v in _GPU_SPEC_GBPS.items()}


def gpu_bandwidth_gbps(name: str) -> float | None:
    """Spec bandwidth for a GPU by its reported name; None when not in the table.

    Exact match only: "RTX 4090 Laptop GPU" must not inherit the desktop 4090's number.
    """
    return _BY_KEY.get(_normalize(name))


def bandwidth_from_bus(bus_width_bits: int, mem_clock_mhz: int) -> float | None:
    """Peak GB/s from bus width and NVML's max memory clock.

    NVML's memory clock is half the data rate for both GDDR and HBM (a 4090 reports
    10501 MHz on a 384-bit bus: 10501e6 x 2 x 48 B = 1008 GB/s).
    """
    if bus_width_bits <= 0 or mem_clock_mhz <= 0:
        return None
    return round(mem_clock_mhz * 1e6 * 2 * bus_width_bits / 8 / 1e9, 1)


# Apple Silicon: unified-memory bandwidth by chip. Max chips come in two memory
# configurations; the one with more performance cores has the wider bus.
_APPLE_GBPS: dict[str, float] = {
    "M1": 68,
    "M1 Pro": 200,
    "M1 Max": 400,
    "M1 Ultra": 800,
    "M2": 100,
    "M2 Pro": 200,
    "M2 Max": 400,
    "M2 Ultra": 800,
    "M3": 100,
    "M3 Pro": 150,
    "M3 Ultra": 819,
    "M4": 120,
    "M4 Pro": 273,
    "M5": 153,
}
# (chip, performance cores at or above which the wide variant applies, narrow, wide)
_APPLE_SPLIT: dict[str, tuple[int, float, float]] = {
    "M3 Max": (12, 300, 400),  # 14-core CPU / 30-core GPU vs 16-core / 40-core
    "M4 Max": (12, 410, 546),  # 14-core CPU / 32-core GPU vs 16-core / 40-core
}


def apple_chip(brand: str) -> str | None:
    """'Apple M2 Pro' -> 'M2 Pro'; None for Intel Macs."""
    m = re.match(r"^\s*Apple\s+(M\d+(?:\s+(?:Pro|Max|Ultra))?)\b", brand)
    return m.group(1) if m else None


def apple_bandwidth_gbps(chip: str, performance_cores: int | None = None) -> float | None:
    """Unified-memory GB/s for an Apple chip ('M3 Max'); None when unknown."""
    if chip in _APPLE_SPLIT:
        threshold, narrow, wide = _APPLE_SPLIT[chip]
        if performance_cores is None:
            return narrow  # the conservative figure when the variant is unknown
        return wide if performance_cores >= threshold else narrow
    return _APPLE_GBPS.get(chip)
