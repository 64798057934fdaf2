"""Can the installed llama.cpp use the GPU? A GPU box silently serving from a
CPU-only build is the worst failure this product can have, so this is checked and
shouted about.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from types import ModuleType

from appliance.hardware.types import Hardware

# The llama.cpp build option per GPU vendor: what the Makefile passes in CMAKE_ARGS.
CMAKE_FLAG = {"nvidia": "-DGGML_CUDA=on", "apple": "-DGGML_METAL=on", "amd": "-DGGML_HIP=on"}


def llama_gpu_offload(
    importer: Callable[[str], ModuleType] = importlib.import_module,
) -> tuple[bool | None, list[str]]:
    """(offload supported, notes); None when llama-cpp-python cannot be imported."""
    try:
        llama_cpp = importer("llama_cpp")
    except Exception as e:  # ImportError, or OSError when the shared library won't load
        return None, [f"llama.cpp: llama-cpp-python not importable ({type(e).__name__}: {e})"]
    try:
        return bool(llama_cpp.llama_supports_gpu_offload()), []
    except Exception as e:
        return None, [f"llama.cpp: could not ask the build about GPU offload ({e})"]


def _installed_version() -> str:
    try:
        return "==" + metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return ""


def reinstall_command(vendor: str) -> str:
    flag = CMAKE_FLAG.get(vendor, "-DGGML_CUDA=on")
    return (
        f'CMAKE_ARGS="{flag}" .venv/bin/pip install --no-cache-dir --force-reinstall --no-deps '
        f"llama-cpp-python{_installed_version()}"
    )


def cpu_only_warning(hw: Hardware) -> str | None:
    """The loud message for a GPU machine whose llama.cpp cannot offload, else None."""
    if not hw.gpus or hw.llama_gpu_offload is not False:
        return None
    vendor = hw.gpus[0].vendor
    return (
        f"GPU detected ({hw.gpus[0].name}) but this llama.cpp build is CPU-only: "
        f"models would run on the CPU, many times slower. Reinstall with "
        f"CMAKE_ARGS={CMAKE_FLAG.get(vendor, '-DGGML_CUDA=on')}: {reinstall_command(vendor)}"
    )
