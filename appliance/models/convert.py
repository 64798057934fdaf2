"""`appliance convert`: a catalog model's GGUF from the store (or a .gguf path) -> the Hugging
Face folder vLLM loads, written where the store keeps converted checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.models.checkpoints import converted_dir
from appliance.models.store import fetch
from quantization.catalog import load_catalog
from runtimes.vllm.convert import ConvertError, convert_gguf


def convert_model(name_or_file: str, quant: str | None, out: Path | None, python: str | None) -> Path:
    """A catalog model (fetched into the store first if needed) or a .gguf path."""
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
