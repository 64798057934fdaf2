"""MoE experts in host memory (issue 14): a synthetic qwen3moe GGUF loaded by the real llama.cpp
with the routed experts of the first N layers overridden to the CPU buffer type.

On this CPU-only build every buffer is host memory, so what can be checked here is that llama.cpp
accepts the override list, applies it to exactly the expert tensors of the first N layers (its own
load log names each one), and that the output does not change: greedy decoding is token for token
the same with and without the override.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from appliance.bench.synthetic_moe import TINY, expert_layer_bytes, tensors, write_moe_gguf
from appliance.serve.llamacpp import placement_line
from quantization.gguf_header import read_header
from runtimes.base import Sampling
from runtimes.llamacpp.engine import Engine, EngineConfig
from runtimes.llamacpp.model import EXPERT_TENSORS, expert_override_patterns

pytestmark = pytest.mark.slow

EXPERT_KINDS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")
PROMPT = "<|im_start|>user\nWrite a haiku about rivers.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def moe_path(tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Path:
    path = tmp_path_factory.mktemp("moe") / "tiny-qwen3moe.gguf"
    write_moe_gguf(path, TINY, smollm_path)
    return path


def _engine(path: Path, n_cpu_moe: int) -> Engine:
    return Engine(
        EngineConfig(model_path=path, n_ctx=512, n_threads=2, n_batch=256, n_ubatch=256, n_cpu_moe=n_cpu_moe)
    )


def _greedy(engine: Engine, n: int = 24) -> list[int]:
    async def go() -> list[int]:
        prompt = engine.tokenize(PROMPT)
        sampling = Sampling(temperature=0.0, max_tokens=n, ignore_eos=True)
        return [t async for step in engine.generate(prompt, sampling) for t in step.token_ids]

    return asyncio.run(go())


def test_patterns_are_llama_cpps_per_layer_expert_patterns() -> None:
    """The regexes --n-cpu-moe builds; std::regex_search and re.search agree on this syntax."""
    pats = expert_override_patterns(12)
    assert len(pats) == 12 and expert_override_patterns(0) == []
    assert expert_override_patterns(-1) == [EXPERT_TENSORS]
    layer1 = [p for p in pats if re.search(p, "blk.1.ffn_up_exps.weight")]
    assert layer1 == [pats[1]]  # blk.1 only; blk\.1 must not also claim blk.11
    assert [p for p in pats if re.search(p, "blk.11.ffn_down_exps.weight")] == [pats[11]]
    others = ("blk.1.ffn_gate_inp.weight", "blk.1.ffn_up.weight", "blk.1.attn_q.weight", "blk.12.ffn_up_exps")
    for name in others:
        assert not any(re.search(p, name) for p in pats), name
    assert re.search(pats[3], "blk.3.ffn_gate_up_exps.weight")  # fused experts (gpt-oss style)


def test_synthetic_file_has_qwen3moe_shapes(moe_path: Path) -> None:
    header = read_header(moe_path)
    assert header.architecture == "qwen3moe"
    assert header.arch_key("expert_count") == TINY.n_experts
    assert header.arch_key("expert_used_count") == TINY.n_experts_used
    assert header.arch_key("expert_feed_forward_length") == TINY.expert_ff
    by_name = {t.name: t for t in header.tensors}
    vocab = len(header.metadata["tokenizer.ggml.tokens"])
    assert by_name["token_embd.weight"].shape == (TINY.hidden, vocab)  # ggml order: row first
    assert by_name["blk.0.ffn_gate_exps.weight"].shape == (TINY.hidden, TINY.expert_ff, TINY.n_experts)
    assert by_name["blk.0.ffn_down_exps.weight"].shape == (TINY.expert_ff, TINY.hidden, TINY.n_experts)
    assert len(header.tensors) == len(tensors(TINY, vocab)) == 3 + 12 * TINY.n_layers


def test_override_puts_first_n_layers_experts_in_host_memory_and_output_is_unchanged(moe_path: Path) -> None:
    plain = _engine(moe_path, 0)
    try:
        assert plain.model.load_report.overridden == {}
        reference = _greedy(plain)
    finally:
        plain.close()
    assert len(set(reference)) > 3, "random weights should not collapse to one repeated token"

    n = 2
    split = _engine(moe_path, n)
    try:
        report = split.model.load_report
        expected = {f"blk.{i}.{kind}.weight" for i in range(n) for kind in EXPERT_KINDS}
        assert set(report.overridden) == expected  # exactly these, no router, no later layer
        assert all(buft.startswith("CPU") for buft in report.overridden.values()), report.overridden
        assert split.model.n_layers == TINY.n_layers
        line = placement_line(split.model)
        assert line.startswith("placement: routed experts of 2 of 4 layers in host memory"), line
        assert _greedy(split) == reference
    finally:
        split.close()

    every = _engine(moe_path, -1)  # --cpu-moe: all layers
    try:
        assert len(every.model.load_report.overridden) == len(EXPERT_KINDS) * TINY.n_layers
        assert _greedy(every) == reference
    finally:
        every.close()


def test_llama_cpp_moves_exactly_the_planned_expert_bytes(moe_path: Path) -> None:
    """The bytes llama.cpp moved to host memory for N layers are those layers' expert tensors as the
    writer planned them (sizes from the tensor table: llama.cpp's log rounds to whole MiB). The
    estimator is checked against the same per-layer bytes at full size in test_estimator.py."""
    vocab = len(read_header(moe_path).metadata["tokenizer.ggml.tokens"])
    sizes = {t.name: t.nbytes for t in tensors(TINY, vocab)}
    engine = _engine(moe_path, 3)
    try:
        moved = sum(sizes[name] for name in engine.model.load_report.overridden)
    finally:
        engine.close()
    assert moved == sum(expert_layer_bytes(TINY, vocab)[:3]) > 0
