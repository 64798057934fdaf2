"""`appliance convert`: a GGUF from the store (or a file) -> a Hugging Face folder vLLM can load.

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
from runtimes.vllm.checkpoints import converted_dir

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


def convert_model(name_or_file: str, quant: str | None, out: Path | None, python: str | None) -> Path:
    """A catalog model (fetched into the store first if needed) or a .gguf path."""
    from appliance.models.store import fetch
    from quantization.catalog import load_catalog

    path = Path(name_or_file)
    if path.suffix == ".gguf":
        return convert_gguf(path, out or path.with_suffix(""), python)
    model = load_catalog().get(name_or_file)
    if model is None:
        raise ConvertError(f"unknown model {name_or_file!r} (give a catalog name or a .gguf file)")
    ggufs = [a for a in model.artifacts if a.format == "gguf"]
    artifact = next((a for a in ggufs if quant and a.quant.lower() == quant.lower()), None)
    artifact = artifact or (None if quant else (ggufs[0] if ggufs else None))
    if artifact is None:
        raise ConvertError(f"{model.name} has no GGUF {quant or ''} artifact to convert")
    gguf = fetch(model, artifact, log=lambda m: print(m, file=sys.stderr))
    return convert_gguf(gguf, out or converted_dir(model), python)
