"""A dense model split by layers (issue 14, llama.cpp's -ngl): the engine loads a real GGUF with the
plan's n_gpu_layers and generates.

On this CPU-only build llama.cpp accepts n_gpu_layers and ignores it (no device to offload to; its
load log then says nothing about offloading), so what is checked here is that the value travels to
llama.cpp, that the model loads and that greedy decoding is token for token what the whole model
gives. On a GPU build the same test checks llama.cpp's own count, "offloaded k/(n_layers + 1)", and
that it generates.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.serve.llamacpp import layers_line
from runtimes.base import Sampling
from runtimes.llamacpp.engine import Engine, EngineConfig
from runtimes.llamacpp.model import gpu_offload

pytestmark = pytest.mark.slow

PROMPT = "<|im_start|>user\nWrite a haiku about rivers.<|im_end|>\n<|im_start|>assistant\n"


def _engine(path: Path, n_gpu_layers: int) -> Engine:
    cfg = EngineConfig(
        model_path=path, n_ctx=512, n_threads=2, n_batch=256, n_ubatch=256, n_gpu_layers=n_gpu_layers
    )
    return Engine(cfg)


def _greedy(engine: Engine, n: int = 16) -> list[int]:
    async def go() -> list[int]:
        prompt = engine.tokenize(PROMPT)
        sampling = Sampling(temperature=0.0, max_tokens=n, ignore_eos=True)
        return [t async for step in engine.generate(prompt, sampling) for t in step.token_ids]

    return asyncio.run(go())


def test_a_partial_ngl_loads_and_generates_as_the_whole_model(qwen_path: Path) -> None:
    whole = _engine(qwen_path, -1)
    try:
        reference = _greedy(whole)
        n_layers = whole.model.n_layers
    finally:
        whole.close()
    assert len(reference) == 16

    k = n_layers // 2
    split = _engine(qwen_path, k)
    try:
        assert split.model.n_gpu_layers == k  # what llama.cpp was given
        applied = split.model.load_report.offloaded
        line = layers_line(split.model, k)
        if gpu_offload():
            assert applied == (k, n_layers + 1)
            assert line.startswith(f"placement: llama.cpp offloaded {k}/{n_layers + 1} layers"), line
        else:
            assert applied is None
            assert "no GPU offload" in line and f"-ngl {k}" in line, line
        got = _greedy(split)
        # the CPU runs the same kernels either way; a GPU's differ in rounding, so there only the count
        assert got == reference if not gpu_offload() else len(got) == len(reference)
    finally:
        split.close()
