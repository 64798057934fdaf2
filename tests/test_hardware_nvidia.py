"""NVIDIA detection against a stand-in NVML built from recorded real outputs, and
the CPU-only-build warning on a GPU box."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from appliance.hardware.detect import detect
from appliance.hardware.nvidia import detect_nvidia
from appliance.hardware.report import print_hardware

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
MiB = 1024**2


class NVMLError(Exception):
    """What pynvml raises; str() is NVML's message."""


class StandInNVML:
    """Answers pynvml's calls from a recording; a missing key raises like an unsupported query."""

    NVML_CLOCK_MEM = 2
    NVMLError = NVMLError

    def __init__(self, record: dict[str, Any]):
        self.rec = record
        self.initialized = False
        self.shutdown_called = False

    def _dev(self, handle: int, key: str) -> Any:
        assert self.initialized, "NVML call before nvmlInit"
        dev = self.rec["devices"][handle]
        if key not in dev:
            raise NVMLError("Not Supported")
        return dev[key]

    def nvmlInit(self) -> None:
        if "init_error" in self.rec:
            raise NVMLError(self.rec["init_error"])
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.shutdown_called = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.rec["driver_version"]

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.rec["cuda_driver_version"]

    def nvmlDeviceGetCount(self) -> int:
        return len(self.rec["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._dev(handle, "name")

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(**self._dev(handle, "memory"))

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return tuple(self._dev(handle, "cuda_compute_capability"))

    def nvmlDeviceGetMemoryBusWidth(self, handle: int) -> int:
        return self._dev(handle, "memory_bus_width")

    def nvmlDeviceGetMaxClockInfo(self, handle: int, clock_type: int) -> int:
        assert clock_type == self.NVML_CLOCK_MEM
        return self._dev(handle, "max_clock_mem_mhz")

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._dev(handle, "compute_processes")]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(**p) for p in self._dev(handle, "graphics_processes")]

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        name = self.rec.get("process_names", {}).get(str(pid))
        if name is None:
            raise NVMLError("Not Found")
        return name


def recording(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"nvml-{name}.json").read_text())


def no_offload() -> tuple[bool | None, list[str]]:
    return False, []


def with_offload() -> tuple[bool | None, list[str]]:
    return True, []


def test_rtx_4090_desktop() -> None:
    nvml = StandInNVML(recording("rtx4090"))
    gpus, notes = detect_nvidia(nvml)
    assert notes == []
    assert nvml.shutdown_called
    (g,) = gpus
    assert g.vendor == "nvidia" and g.name == "NVIDIA GeForce RTX 4090"
    assert g.total_bytes == 24564 * MiB
    assert g.free_bytes == 25128075264  # what NVML says is free, not total minus processes
    assert 23 * 1024**3 < g.free_bytes < g.total_bytes
    assert g.compute_capability == "8.9"
    assert g.driver_version == "550.120" and g.cuda_version == "12.4"
    assert g.bandwidth_gbps == 1008
    assert [(p.name, p.pid) for p in g.processes] == [("Xorg", 1843), ("gnome-shell", 2310)]
    assert 390 * MiB < g.processes[0].used_bytes < 430 * MiB


def test_two_rtx_3090_headless() -> None:
    gpus, notes = detect_nvidia(StandInNVML(recording("2x-rtx3090")))
    assert notes == []
    assert [g.index for g in gpus] == [0, 1]
    assert all(g.name == "NVIDIA GeForce RTX 3090" for g in gpus)
    assert all(g.total_bytes == 24576 * MiB for g in gpus)
    assert all(g.compute_capability == "8.6" and g.bandwidth_gbps == 936 for g in gpus)
    assert all(g.driver_version == "535.183.01" and g.cuda_version == "12.2" for g in gpus)
    busy, idle = gpus
    assert [(p.name, p.used_bytes) for p in busy.processes] == [("python3.11", 1536 * MiB)]
    assert idle.processes == []
    assert busy.free_bytes < idle.free_bytes < idle.total_bytes


def test_unknown_name_falls_back_to_bus_width_times_clock() -> None:
    rec = recording("rtx4090")
    rec["devices"][0]["name"] = "NVIDIA GeForce RTX 4090 Engineering Sample"
    (g,), notes = detect_nvidia(StandInNVML(rec))
    assert g.bandwidth_gbps == pytest.approx(1008, abs=1)  # 10501 MHz x 2 x 384 bit
    assert notes == []


def test_unsupported_queries_become_notes_not_crashes() -> None:
    rec = recording("2x-rtx3090")
    dev = rec["devices"][1]
    dev["name"] = "NVIDIA Mystery GPU"
    for key in ("memory_bus_width", "max_clock_mem_mhz", "cuda_compute_capability", "compute_processes"):
        del dev[key]
    rec["process_names"] = {}  # a container cannot name host processes
    gpus, notes = detect_nvidia(StandInNVML(rec))
    assert len(gpus) == 2
    assert gpus[1].bandwidth_gbps is None and gpus[1].compute_capability is None
    assert gpus[0].processes[0].pid == 48213  # still listed, name from psutil or empty
    assert any("bandwidth of NVIDIA Mystery GPU unknown" in n for n in notes)
    assert any("compute capability" in n for n in notes)


def test_gpu_without_memory_info_is_skipped_with_a_note() -> None:
    rec = recording("2x-rtx3090")
    del rec["devices"][0]["memory"]
    gpus, notes = detect_nvidia(StandInNVML(rec))
    assert [g.free_bytes for g in gpus] == [rec["devices"][1]["memory"]["free"]]
    assert any("skipped GPU 0" in n for n in notes)


def test_nvml_init_failure_is_a_note() -> None:
    rec = copy.deepcopy(recording("rtx4090"))
    rec["init_error"] = "Driver Not Loaded"
    gpus, notes = detect_nvidia(StandInNVML(rec))
    assert gpus == []
    assert len(notes) == 1 and "Driver Not Loaded" in notes[0]


def test_detect_with_nvidia_and_gpu_build_has_no_warning() -> None:
    hw = detect(nvml=StandInNVML(recording("2x-rtx3090")), offload=with_offload, os_name="linux")
    assert hw.has_nvidia and len(hw.gpus) == 2
    assert hw.gpu_total_bytes == 2 * 24576 * MiB
    assert hw.llama_gpu_offload is True
    assert not any("CPU-only" in n for n in hw.notes)


def test_cpu_only_build_on_gpu_box_is_a_loud_note() -> None:
    hw = detect(nvml=StandInNVML(recording("rtx4090")), offload=no_offload, os_name="linux")
    assert hw.llama_gpu_offload is False
    assert hw.notes[0].startswith("WARNING:")
    assert "CPU-only" in hw.notes[0] and "CMAKE_ARGS=-DGGML_CUDA=on" in hw.notes[0]


def test_print_hardware_shows_the_cpu_only_warning_in_red() -> None:
    hw = detect(nvml=StandInNVML(recording("rtx4090")), offload=no_offload, os_name="linux")
    out = io.StringIO()
    print_hardware(hw, Console(file=out, force_terminal=True, color_system="standard", width=100))
    text = out.getvalue()
    assert "this llama.cpp build is CPU-only" in text
    assert "CMAKE_ARGS=-DGGML_CUDA=on" in text
    assert "\x1b[1;31m" in text  # bold red
    assert text.count("GPU UNUSED") == 2  # before and after the details


def test_print_hardware_gpu_table() -> None:
    hw = detect(nvml=StandInNVML(recording("rtx4090")), offload=with_offload, os_name="linux")
    out = io.StringIO()
    print_hardware(hw, Console(file=out, width=160))
    text = out.getvalue()
    for expected in (
        "NVIDIA GeForce RTX 4090",
        "24.0 GiB",
        "23.4 GiB",
        "1008 GB/s",
        "8.9",
        "550.120 / 12.4",
        "Xorg",
    ):
        assert expected in text
    assert "GPU offload: yes" in text
    assert "CPU-only" not in text
