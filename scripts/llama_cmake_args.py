#!/usr/bin/env python3
"""Print the CMAKE_ARGS for building llama-cpp-python on this machine.

Why not llama.cpp's default `-march=native`: on Intel Xeons with AMX it also compiles the AMX
kernels, which crash (SIGSEGV in ggml_backend_amx_mul_mat) in the vendored ggml of 0.3.36 on our
machines. Turning AMX off at runtime also turns off the CPU weight repacking that makes Q4/Q8
matmuls fast. So on x86 CPU-only boxes we list the ISA extensions the CPU has, minus AMX.

GPU boxes: CUDA where nvidia-smi exists, Metal on macOS. An explicit CMAKE_ARGS in the
environment always wins (the Makefile only calls us when it is unset).
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

# /proc/cpuinfo flag -> ggml CMake option. Order matters only for readability.
X86_FLAGS: dict[str, str] = {
    "sse4_2": "GGML_SSE42",
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "bmi2": "GGML_BMI2",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}


def cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def x86_cmake_args(flags: set[str]) -> list[str]:
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-D{opt}=ON" for flag, opt in X86_FLAGS.items() if flag in flags]
    args += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    return args


def cmake_args() -> list[str]:
    if platform.system() == "Darwin":
        return ["-DGGML_METAL=on"]
    if shutil.which("nvidia-smi"):
        return ["-DGGML_CUDA=on"]
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() in ("x86_64", "AMD64") and cpuinfo.exists():
        return x86_cmake_args(cpu_flags(cpuinfo.read_text()))
    return []  # ARM Linux and others: llama.cpp's native default is fine


if __name__ == "__main__":
    print(" ".join(cmake_args()))
