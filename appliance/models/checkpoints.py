"""Where vLLM's Hugging Face-format checkpoints live in the model store (the store's layout,
so the vLLM runtime itself never needs to know where models are kept).

GGUF files sit at `models/<name>/<file>.gguf`; a vLLM checkpoint is a folder beside them:
`models/<name>/<QUANT>/` for a downloaded AWQ/GPTQ/FP8/BF16 checkpoint, `models/<name>/hf/`
for one converted from the GGUF by `appliance convert`. A folder counts once it has config.json.
One pulled from the hub (`appliance pull`) stays in the Hugging Face cache; the manifest
records its folder.
"""

from __future__ import annotations

from pathlib import Path

from appliance.models.store import manifest
from appliance.paths import models_dir
from quantization.catalog import Artifact, ModelSpec


def converted_dir(model: ModelSpec) -> Path:
    return models_dir() / model.name / "hf"


def checkpoint_dir(model: ModelSpec, artifact: Artifact) -> Path:
    if artifact.format == "gguf":
        return converted_dir(model)
    return models_dir() / model.name / artifact.quant


def is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def resolve_checkpoint(model: ModelSpec, artifact: Artifact, *, allow_hub: bool) -> str:
    """The local folder if present; else the hub repo id (vLLM downloads it) when allowed."""
    folder = checkpoint_dir(model, artifact)
    if is_checkpoint(folder):
        return str(folder)
    pulled = manifest().get(model.name, artifact.quant)  # `appliance pull`: in the HF cache
    if pulled is not None and pulled.folder and pulled.intact() and is_checkpoint(Path(pulled.folder)):
        return pulled.folder
    if artifact.format == "gguf":
        raise FileNotFoundError(
            f"vLLM needs a Hugging Face folder: run `appliance convert {model.name} --quant "
            f"{artifact.quant}` (writes {folder}) or pass --model-dir"
        )
    if allow_hub and artifact.repo:
        return artifact.repo
    raise FileNotFoundError(
        f"{model.name} {artifact.quant} is not in the store: put the checkpoint folder at {folder} "
        "or pass --model-dir"
    )
