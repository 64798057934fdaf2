"""Every bundled hardware profile loads into the detector's shape with sane numbers."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from appliance.hardware.apple import METAL_RESERVE_BYTES, metal_budget_bytes
from appliance.hardware.bandwidth import apple_bandwidth_gbps, apple_chip, gpu_bandwidth_gbps
from appliance.hardware.report import print_hardware
from appliance.hardware.types import Hardware
from appliance.profiles import list_profiles, load_profile, profile_description
from appliance.units import GiB, MiB

REQUIRED = {
    "rtx-4090",
    "rtx-3090",
    "2x-rtx-3090",
    "rtx-4080",
    "rtx-4060",
    "a100-80gb",
    "h100-80gb",
    "mac-m2-16gb",
    "mac-m3-pro-36gb",
    "mac-m4-pro-48gb",
    "mac-m2-max-64gb",
    "mac-m2-ultra-128gb",
    "cpu-32gb",
    "cpu-2core-24gb",
}
PROFILES = list_profiles()


def test_required_profiles_exist() -> None:
    assert set(PROFILES) >= REQUIRED


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_sane(name: str) -> None:
    hw = load_profile(name)
    assert isinstance(hw, Hardware)
    assert hw.name == name and hw.source == f"profile:{name}"
    assert profile_description(name)
    assert hw.os in ("linux", "darwin")
    assert 1 <= hw.cpu.physical_cores <= hw.cpu.logical_cores
    assert hw.cpu.arch in ("x86_64", "arm64")
    assert hw.cpu.flags
    assert 4 * GiB <= hw.ram_available_bytes < hw.ram_total_bytes <= 1024 * GiB
    assert [g.index for g in hw.gpus] == list(range(len(hw.gpus)))
    for g in hw.gpus:
        assert 0 < g.free_bytes < g.total_bytes
        assert g.bandwidth_gbps and g.bandwidth_gbps > 50
        assert g.free_bytes >= g.total_bytes - 2 * GiB - sum(p.used_bytes for p in g.processes)
    if hw.gpus:
        assert hw.llama_gpu_offload is True
    else:
        assert hw.name.startswith("cpu-") and hw.llama_gpu_offload is False


@pytest.mark.parametrize("name", [p for p in PROFILES if load_profile(p).has_nvidia])
def test_nvidia_profile_matches_what_the_detector_would_say(name: str) -> None:
    hw = load_profile(name)
    assert hw.cpu.arch == "x86_64" and "avx2" in hw.cpu.flags
    for g in hw.gpus:
        assert g.vendor == "nvidia" and g.name.startswith("NVIDIA ")
        assert g.bandwidth_gbps == gpu_bandwidth_gbps(g.name)
        assert g.compute_capability in ("8.0", "8.6", "8.9", "9.0")
        assert g.driver_version and g.cuda_version


@pytest.mark.parametrize("name", [p for p in PROFILES if p.startswith("mac-")])
def test_mac_profile_follows_the_metal_budget_rule(name: str) -> None:
    hw = load_profile(name)
    assert hw.os == "darwin" and hw.is_apple and hw.cpu.arch == "arm64" and "neon" in hw.cpu.flags
    (g,) = hw.gpus
    assert g.unified and g.name == hw.cpu.model
    assert g.total_bytes == pytest.approx(metal_budget_bytes(hw.ram_total_bytes), abs=MiB)
    assert g.free_bytes == pytest.approx(g.total_bytes - METAL_RESERVE_BYTES, abs=MiB)
    chip = apple_chip(g.name)
    assert chip is not None
    assert g.bandwidth_gbps == apple_bandwidth_gbps(chip) == hw.ram_bandwidth_gbps


def test_specific_numbers() -> None:
    r4090 = load_profile("rtx-4090")
    assert r4090.gpu_total_bytes == 24564 * MiB
    assert 23 * GiB < r4090.gpu_free_bytes < 24 * GiB  # a desktop session holds some VRAM
    assert {p.name for p in r4090.gpus[0].processes} == {"Xorg", "gnome-shell"}
    assert len(load_profile("2x-rtx-3090").gpus) == 2
    assert load_profile("rtx-4060").gpu_total_bytes < 8 * GiB
    assert 15 * GiB < load_profile("rtx-4080").gpu_total_bytes <= 16 * GiB
    assert load_profile("h100-80gb").gpus[0].bandwidth_gbps == 3350
    assert load_profile("a100-80gb").gpus[0].bandwidth_gbps == 2039
    assert load_profile("mac-m2-16gb").gpu_total_bytes == pytest.approx(16 * GiB * 2 / 3, abs=MiB)
    assert load_profile("mac-m2-ultra-128gb").gpu_total_bytes == 96 * GiB
    small = load_profile("cpu-2core-24gb")
    assert small.cpu.physical_cores == 2 and "avx512f" in small.cpu.flags and small.gpus == []
    desktop = load_profile("cpu-32gb")
    assert (
        desktop.cpu.physical_cores == 8 and "avx2" in desktop.cpu.flags and "avx512f" not in desktop.cpu.flags
    )


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown hardware profile 'rtx-9090'") as err:
        load_profile("rtx-9090")
    assert "rtx-4090" in str(err.value) and "mac-m2-16gb" in str(err.value)


def test_profiles_print() -> None:
    for name in ("rtx-4090", "mac-m2-ultra-128gb", "cpu-32gb"):
        out = io.StringIO()
        print_hardware(load_profile(name), Console(file=out, width=120))
        assert name in out.getvalue() and "GPU UNUSED" not in out.getvalue()
