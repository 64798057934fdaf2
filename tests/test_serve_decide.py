"""`appliance serve`'s choice of what to load, from the planner's ranking and the user's pins."""

from __future__ import annotations

from appliance.config import ServeConfig
from appliance.profiles import load_profile
from appliance.serve.choice import decide


def test_forced_vllm_says_so_instead_of_the_llamacpp_plans_reason() -> None:
    """`--runtime vllm` on a plan that chose llama.cpp: the banner must not claim the GGUF's
    quant and llama.cpp speed for what vLLM serves (seen on an H200 on 2026-12-04)."""
    hw = load_profile("h100-80gb")
    cfg = ServeConfig(runtime="vllm", model="smollm2-135m-instruct", small_model="none")
    (spec,) = decide(cfg, hw)
    assert spec.runtime == "vllm"
    assert spec.reason == "--runtime vllm"
    assert spec.artifact.quant not in spec.reason
