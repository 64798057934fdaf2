"""Apple Silicon detection against sysctl output as real Macs print it."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.hardware.apple import (
    METAL_RESERVE_BYTES,
    detect_apple,
    metal_budget_bytes,
    sysctl_from_text,
)
from appliance.hardware.cpu import detect_cpu_macos
from appliance.hardware.detect import detect
from appliance.units import GiB

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"


def mac(name: str):
    return sysctl_from_text((FIXTURES / f"sysctl-{name}.txt").read_text())


def test_sysctl_reader_parses_recorded_output() -> None:
    s = mac("m1-16gb-rosetta")
    assert s("machdep.cpu.brand_string") == "Apple M1"
    assert s("hw.memsize") == "17179869184"
    assert s("sysctl.proc_translated") == "1"
    assert s("iogpu.wired_limit_mb") is None  # "unknown oid" line


def test_budget_rule() -> None:
    assert metal_budget_bytes(16 * GiB) == int(16 * GiB * 2 / 3)
    assert metal_budget_bytes(36 * GiB) == 24 * GiB  # <= 36 GiB: two thirds
    assert metal_budget_bytes(48 * GiB) == 36 * GiB  # larger: three quarters
    assert metal_budget_bytes(128 * GiB, wired_limit=120 * GiB) == 120 * GiB
    assert metal_budget_bytes(16 * GiB, wired_limit=64 * GiB) == 16 * GiB  # never above RAM


@pytest.mark.parametrize(
    ("fixture", "name", "ram_gib", "budget_gib", "bandwidth"),
    [
        ("m2-pro-16gb", "Apple M2 Pro", 16, 16 * 2 / 3, 200),
        ("m3-max-36gb", "Apple M3 Max", 36, 24, 300),  # 14-core CPU / 30-core GPU variant
        ("m4-max-48gb", "Apple M4 Max", 48, 36, 546),  # 16-core CPU / 40-core GPU variant
        ("m2-ultra-128gb", "Apple M2 Ultra", 128, 120, 800),  # iogpu.wired_limit_mb=122880
    ],
)
def test_apple_gpu(fixture: str, name: str, ram_gib: int, budget_gib: float, bandwidth: float) -> None:
    (gpu,), notes = detect_apple(mac(fixture))
    assert gpu.vendor == "apple" and gpu.unified and gpu.name == name
    assert gpu.total_bytes == pytest.approx(budget_gib * GiB, abs=1)
    assert gpu.free_bytes == gpu.total_bytes - METAL_RESERVE_BYTES
    assert gpu.bandwidth_gbps == bandwidth
    assert gpu.compute_capability is None and gpu.cuda_version is None
    wired = fixture == "m2-ultra-128gb"
    assert any("wired limit" in n for n in notes) == wired


def test_rosetta_is_reported() -> None:
    (gpu,), notes = detect_apple(mac("m1-16gb-rosetta"))
    assert gpu.bandwidth_gbps == 68
    assert any("Rosetta" in n for n in notes)


def test_intel_mac_has_no_apple_gpu() -> None:
    gpus, notes = detect_apple(mac("intel-i9-32gb"))
    assert gpus == []
    assert "no Apple Silicon GPU" in notes[0]


def test_macos_cpu() -> None:
    cpu = detect_cpu_macos(mac("m2-pro-16gb"))
    assert cpu.model == "Apple M2 Pro"
    assert (cpu.physical_cores, cpu.logical_cores, cpu.arch) == (10, 10, "arm64")
    assert cpu.flags == ["neon", "fp16", "dotprod", "i8mm", "bf16"]
    m1 = detect_cpu_macos(mac("m1-16gb-rosetta"))
    assert m1.arch == "arm64"  # the hardware, even when Python runs translated
    assert "i8mm" not in m1.flags and "bf16" not in m1.flags
    intel = detect_cpu_macos(mac("intel-i9-32gb"))
    assert (intel.arch, intel.physical_cores, intel.logical_cores) == ("x86_64", 8, 16)
    assert intel.flags == ["sse4_2", "avx", "avx2", "fma", "f16c"]


def test_detect_on_a_mac() -> None:
    hw = detect(sysctl=mac("m3-max-36gb"), offload=lambda: (True, []), os_name="darwin", hostname="studio")
    assert hw.is_apple and hw.os == "darwin" and hw.name == "studio"
    assert hw.cpu.model == "Apple M3 Max"
    assert hw.ram_bandwidth_gbps == 300  # unified memory
    assert hw.gpu_total_bytes == 24 * GiB


def test_detect_mac_with_cpu_only_build_warns_metal() -> None:
    hw = detect(sysctl=mac("m2-pro-16gb"), offload=lambda: (False, []), os_name="darwin")
    assert hw.notes[0].startswith("WARNING:") and "-DGGML_METAL=on" in hw.notes[0]
