"""GGUF -> Hugging Face folder (safetensors, config, tokenizer, chat template) for vLLM.

Runs as a script inside an environment that has torch + transformers + gguf + accelerate
(vLLM's venv has the first two and `runtimes.vllm.venv` adds the others), so it imports
nothing from the appliance: `python gguf_to_hf.py MODEL.gguf OUT_DIR`.

transformers can load a GGUF (`from_pretrained(folder, gguf_file=name)`, dequantizing it),
but the model it returns refuses `save_pretrained`; so the weights are moved into a fresh
model built from the same config (`from_config` + `load_state_dict`) and that one is saved.
The result is unquantized (bf16): a Q4 GGUF becomes about four times larger.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path


def convert(gguf: Path, out: Path, dtype: str = "bfloat16") -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    torch_dtype = getattr(torch, dtype)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    config.dtype = torch_dtype  # written to config.json: vLLM's "auto" dtype reads it
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not _tied(k, config)]
    if missing or unexpected:
        raise SystemExit(f"weights do not match the config: missing {missing[:5]}, extra {unexpected[:5]}")
    if fresh.config.tie_word_embeddings:
        fresh.tie_weights()
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = _gguf_chat_template(gguf)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _write_generation_config(tmp, tokenizer)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _tied(key: str, config) -> bool:
    return key == "lm_head.weight" and bool(getattr(config, "tie_word_embeddings", False))


def _gguf_chat_template(gguf: Path) -> str | None:
    """The template stored in the GGUF metadata, for transformers versions that drop it."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    if hasattr(field, "contents"):
        return field.contents()
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _write_generation_config(folder: Path, tokenizer) -> None:
    """Stop at the end-of-turn token: vLLM takes its defaults from generation_config.json."""
    path = folder / "generation_config.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if tokenizer.eos_token_id is not None:
        data.setdefault("eos_token_id", tokenizer.eos_token_id)
    if tokenizer.bos_token_id is not None:
        data.setdefault("bos_token_id", tokenizer.bos_token_id)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gguf", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = p.parse_args(argv)
    print(convert(args.gguf.resolve(), args.out.resolve(), args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
