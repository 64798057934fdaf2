"""The CPU and RAM path, for real on this machine: compared with what /proc and
psutil say, not with hard-coded numbers."""

from __future__ import annotations

import io
import json
import os
import platform
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from rich.console import Console

from appliance.hardware.amd import detect_amd, parse_rocm_smi
from appliance.hardware.bandwidth import apple_bandwidth_gbps, apple_chip, gpu_bandwidth_gbps
from appliance.hardware.cpu import detect_cpu_linux, isa_flags_linux
from appliance.hardware.detect import detect
from appliance.hardware.memory import read_ram
from appliance.hardware.report import print_hardware

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
GiB = 1024**3
linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/cpuinfo")


def proc_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


@linux_only
def test_cpu_matches_proc_and_psutil() -> None:
    cpu = detect_cpu_linux()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")
    )
    assert cpu.model == model
    assert cpu.logical_cores == len(os.sched_getaffinity(0))
    assert cpu.physical_cores == min(psutil.cpu_count(logical=False), cpu.logical_cores)
    assert cpu.arch == {"aarch64": "arm64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())
    raw = proc_flags()
    for ours, theirs in [
        ("avx", "avx"),
        ("avx2", "avx2"),
        ("avx512f", "avx512f"),
        ("avx512_vnni", "avx512_vnni"),
        ("avx512_bf16", "avx512_bf16"),
        ("amx", "amx_tile"),
        ("f16c", "f16c"),
        ("fma", "fma"),
        ("neon", "asimd"),
    ]:
        assert (ours in cpu.flags) == (theirs in raw), ours


def test_arm_linux_features_line() -> None:
    cpuinfo = (
        "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes asimdhp asimddp sve i8mm bf16\n"
    )
    assert isa_flags_linux(cpuinfo) == ["neon", "fp16", "dotprod", "i8mm", "bf16", "sve"]
    cpu = detect_cpu_linux(cpuinfo, machine="aarch64", physical_cores=4, logical_cores=4)
    assert cpu.arch == "arm64" and cpu.model  # no "model name" on ARM: a fallback, never empty


def test_ram_matches_psutil() -> None:
    total, available, _ = read_ram()
    vm = psutil.virtual_memory()
    assert total <= vm.total and total > 0
    assert 0 < available <= total
    assert abs(available - vm.available) < 2 * GiB or total < vm.total  # moments apart, or a cgroup cap


def test_cgroup_limit_caps_ram(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("8589934592\n")
    (tmp_path / "memory.stat").write_text("anon 2147483648\nfile 4294967296\n")
    vm = SimpleNamespace(total=64 * GiB, available=60 * GiB)
    total, available, notes = read_ram(vm, cgroup_root=tmp_path)
    assert (total, available) == (8 * GiB, 6 * GiB)
    assert "cgroup" in notes[0]
    (tmp_path / "memory.max").write_text("max\n")
    assert read_ram(vm, cgroup_root=tmp_path)[:2] == (64 * GiB, 60 * GiB)


@linux_only
def test_detect_this_machine() -> None:
    hw = detect()
    assert hw.source == "detected" and hw.os == "linux"
    assert hw.cpu == detect_cpu_linux()
    assert hw.ram_total_bytes == read_ram()[0]
    if not hw.gpus:
        assert any("no GPU" in n for n in hw.notes)
    try:
        import llama_cpp

        assert hw.llama_gpu_offload == bool(llama_cpp.llama_supports_gpu_offload())
    except ImportError:
        assert hw.llama_gpu_offload is None
        assert any("llama-cpp-python not importable" in n for n in hw.notes)
    again = type(hw).model_validate_json(hw.model_dump_json())
    assert again == hw
    out = io.StringIO()
    print_hardware(hw, Console(file=out, width=120))
    assert hw.cpu.model in out.getvalue()


def test_detect_survives_every_probe_failing() -> None:
    def boom(*_args: object) -> None:
        raise RuntimeError("probe exploded")

    class BrokenNVML:
        def nvmlInit(self) -> None:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    hw = detect(nvml=BrokenNVML(), rocm_smi=boom, offload=boom, os_name="linux")
    assert hw.gpus == [] and hw.llama_gpu_offload is None
    assert any("libnvidia-ml.so.1" in n for n in hw.notes)
    assert any("AMD" in n and "probe exploded" in n for n in hw.notes)
    assert any("llama.cpp" in n and "probe exploded" in n for n in hw.notes)


def test_amd_rocm_smi_recording() -> None:
    gpus, notes = parse_rocm_smi((FIXTURES / "rocm-smi-7900xtx.json").read_text())
    (g,) = gpus
    assert (g.vendor, g.name, g.bandwidth_gbps) == ("amd", "Radeon RX 7900 XTX", 960)
    assert g.total_bytes == 25753026560 and g.free_bytes == 25753026560 - 1092620288
    assert notes == []
    text = (FIXTURES / "rocm-smi-7900xtx.json").read_text()
    assert detect_amd(run=lambda args: text)[0] == gpus
    assert "failed" in detect_amd(run=lambda args: None)[1][0]
    assert parse_rocm_smi("not json")[1] == ["AMD: rocm-smi printed no JSON"]
    bad = json.dumps({"card0": {"Card Series": "Radeon X", "VRAM Total Memory (B)": "N/A"}})
    assert parse_rocm_smi(bad)[0] == []


def test_bandwidth_table() -> None:
    assert gpu_bandwidth_gbps("NVIDIA GeForce RTX 4090") == 1008
    assert gpu_bandwidth_gbps("NVIDIA GeForce RTX 4090 Laptop GPU") == 576  # not the desktop part
    assert gpu_bandwidth_gbps("NVIDIA GeForce RTX 4060 Ti") == 288
    assert gpu_bandwidth_gbps("NVIDIA GeForce RTX 4060") == 272
    assert gpu_bandwidth_gbps("NVIDIA A100-SXM4-80GB") == 2039
    assert gpu_bandwidth_gbps("NVIDIA H100 80GB HBM3") == 3350
    assert gpu_bandwidth_gbps("NVIDIA H100 PCIe") == 2000
    assert gpu_bandwidth_gbps("NVIDIA L40S") == 864
    assert gpu_bandwidth_gbps("Tesla T4") == 320
    assert gpu_bandwidth_gbps("NVIDIA Mystery GPU") is None
    assert apple_chip("Apple M2 Pro") == "M2 Pro" and apple_chip("Intel(R) Core(TM) i9") is None
    assert apple_bandwidth_gbps("M3 Max", 10) == 300 and apple_bandwidth_gbps("M3 Max", 12) == 400
    assert apple_bandwidth_gbps("M4 Max", 10) == 410 and apple_bandwidth_gbps("M4 Max", 12) == 546
    assert apple_bandwidth_gbps("M1") == 68 and apple_bandwidth_gbps("M4 Pro") == 273
