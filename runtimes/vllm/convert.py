"""A GGUF file -> a Hugging Face folder vLLM can load (`appliance convert` picks the file).

The conversion needs torch and transformers, which the appliance itself does not depend on
(hundreds of MB that the llama.cpp path never uses). vLLM's own venv already has both, and
the converted folder is only useful to vLLM, so the conversion runs there, as a script
(`gguf_to_hf.py`) that imports nothing from the appliance. Any other python with
torch + transformers + gguf + accelerate can be given with --python.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from runtimes.vllm import venv

WORKER = Path(__file__).with_name("gguf_to_hf.py")


class ConvertError(Exception):
    pass


def conversion_python(explicit: str | None = None) -> str:
    """--python, else vLLM's venv, else this interpreter if it has what the worker imports."""
    if explicit:
        return explicit
    if python := venv.venv_python():
        return str(python)
    if all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gguf", "accelerate")):
        return sys.executable
    raise ConvertError(
        "no python with torch + transformers + gguf found: create vLLM's venv with "
        "`python -m runtimes.vllm.venv` (or `make vllm-venv`), or pass --python"
    )


def convert_gguf(gguf: Path, out: Path, python: str | None = None, dtype: str = "bfloat16") -> Path:
    """Run the worker; its output folder appears whole or not at all."""
    if not gguf.is_file():
        raise ConvertError(f"no such GGUF file: {gguf}")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [conversion_python(python), str(WORKER), str(gguf), str(out), "--dtype", dtype]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConvertError(f"conversion failed:\n{(result.stderr or result.stdout).strip()[-2000:]}")
    return out
